"""The Ray Tune backend: trials in parallel on the CPUs and GPUs of a machine or a Ray cluster.

* :mod:`~midl_autok.search.ray.options`: :class:`RayOptions` (no Ray import);
* :mod:`~midl_autok.search.ray.runtime`: start or join Ray, check resources;
* :mod:`~midl_autok.search.ray.trainable`: what a worker runs for one trial;
* :mod:`~midl_autok.search.ray.searcher`: :class:`SessionSearcher`, the Tune ``Searcher``
  around the search session;
* :mod:`~midl_autok.search.ray.schedulers`: early stopping (``--early-stop asha|mo-asha``);
* :mod:`~midl_autok.search.ray.run`: :func:`run_ray`, :func:`run_ray_search`,
  :func:`node_ids`.

Names load on first use; importing one that needs Ray without Ray installed raises a
:class:`~midl_autok.errors.SpecError` naming the extra to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from midl_autok.errors import SpecError

__all__ = [
    "NODE_TAG",
    "RayOptions",
    "SessionSearcher",
    "check_resources",
    "node_ids",
    "run_ray",
    "run_ray_search",
    "worker_device",
]

_EXPORTS = {
    "RayOptions": "midl_autok.search.ray.options",
    "NODE_TAG": "midl_autok.search.ray.trainable",
    "SessionSearcher": "midl_autok.search.ray.searcher",
    "check_resources": "midl_autok.search.ray.runtime",
    "node_ids": "midl_autok.search.ray.run",
    "run_ray": "midl_autok.search.ray.run",
    "run_ray_search": "midl_autok.search.ray.run",
}

if TYPE_CHECKING:
    from midl_autok.search.ray.options import RayOptions
    from midl_autok.search.ray.run import node_ids, run_ray, run_ray_search
    from midl_autok.search.ray.runtime import check_resources
    from midl_autok.search.ray.searcher import SessionSearcher
    from midl_autok.search.ray.trainable import NODE_TAG


def worker_device(device: str, gpus_per_trial: float) -> str:
    """The device Ray trials train on (:func:`midl_autok.search.devices.trial_device`)."""
    from midl_autok.search.devices import trial_device

    return trial_device(device, gpus_per_trial=gpus_per_trial)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'midl_autok.search.ray' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        if not (exc.name or "").startswith("ray"):
            raise
        raise SpecError(
            "the Ray backend needs Ray Tune; install it with: pip install 'midl-autok[ray]'"
        ) from None
    globals()[name] = value
    return value
