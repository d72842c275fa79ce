"""Options of the Ray backend: where and how trials run (``--workers``, ``--cpus-per-trial``,
``--gpus-per-trial``, ``--ray-address``, ``--early-stop``). Imports no Ray."""

from __future__ import annotations

import math
from dataclasses import dataclass

from midl_autok.errors import SpecError
from midl_autok.search.rungs import EARLY_STOPS, EarlyStop

__all__ = ["EARLY_STOPS", "RayOptions"]


@dataclass(frozen=True)
class RayOptions:
    """Where and how trials run on Ray (``--workers``, ``--cpus-per-trial``, ...)."""

    #: Trials at once (None: as many as the cluster's CPUs and GPUs hold).
    workers: int | None = None
    #: CPUs reserved per trial (fractions allowed).
    cpus_per_trial: float = 1.0
    #: GPUs reserved per trial: a fraction below 1 shares a GPU, above 1 a whole number.
    gpus_per_trial: float = 0.0
    #: None: start a local Ray; ``auto`` or ``host:port``: join that running cluster.
    address: str | None = None
    #: ``none``, ``asha`` or ``mo-asha``.
    early_stop: str = "none"
    #: First rung in epochs (None: a quarter of the epochs, at least 1).
    grace_period: int | None = None
    #: Keep the best 1/r of the trials at each rung.
    reduction_factor: float = 2.0
    #: CPUs / GPUs of a local Ray started here (None: detected); GPUs may be logical.
    num_cpus: int | None = None
    num_gpus: int | None = None

    def check(self) -> None:
        """Raise :class:`SpecError` naming the first bad option."""
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise SpecError(f"--workers must be an integer >= 1, but got {self.workers!r}")
        if not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise SpecError(f"--cpus-per-trial must be > 0, but got {self.cpus_per_trial}")
        gpus = self.gpus_per_trial
        if not (math.isfinite(gpus) and gpus >= 0):
            raise SpecError(f"--gpus-per-trial must be >= 0, but got {gpus}")
        if gpus > 1 and gpus != int(gpus):
            raise SpecError(
                f"--gpus-per-trial above 1 must be a whole number (Ray shares a GPU only as a "
                f"fraction below 1), but got {gpus}"
            )
        self.stopping.check()
        if self.address is not None and self.address.strip().startswith("ray://"):
            raise SpecError(
                f"--ray-address {self.address} is a Ray Client address; the search driver must "
                "run inside the cluster, where the study and the trials' results are: submit "
                "it as a Ray job (ray job submit --address http://HEAD:8265 -- midl-autok "
                "search ... --backend ray --ray-address auto) or run it on the head node"
            )

    @property
    def stopping(self) -> EarlyStop:
        """``--early-stop`` with its rungs (the same rule as the local backend's)."""
        return EarlyStop(self.early_stop, self.grace_period, self.reduction_factor)
