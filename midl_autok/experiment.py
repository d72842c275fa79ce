"""What a training run is built from: the spec's dataset (cached in-process) and its model.

:func:`~midl_autok.trainer.run_experiment` trains with them; the environment builds one model
per episode the same way. Re-exported by :mod:`midl_autok.trainer`, where they used to live.
A spec with ``dataset.factory`` or ``model.factory`` gets them from the user's functions
(:mod:`midl_autok.factories`), here, so every agent and both backends do.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from midl_autok.data import Dataset, load_dataset
from midl_autok.models import MIDLNet, build_model

if TYPE_CHECKING:
    from midl_autok._midlify import Layout
    from midl_autok.schedule import KSchedule
    from midl_autok.spec import ExperimentSpec

__all__ = ["build_for_spec", "dataset_for_spec", "model_for_spec", "seed_everything"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


_DATA_CACHE: dict[str, Dataset] = {}
_DATA_CACHE_SIZE = 4


def dataset_for_spec(spec: ExperimentSpec) -> Dataset:
    """Load (or reuse from an in-process cache) the dataset of ``spec``, split with its seed."""
    d = spec.dataset
    key = json.dumps([d.model_dump(mode="json"), spec.seed], sort_keys=True)
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) >= _DATA_CACHE_SIZE:
            _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        _DATA_CACHE[key] = _load(spec)
    return _DATA_CACHE[key]


def _load(spec: ExperimentSpec) -> Dataset:
    d = spec.dataset
    # the split and the cap, the same for a registered dataset and a factory's
    split: dict[str, Any] = {
        "val_fraction": d.val_fraction,
        "test_fraction": d.test_fraction,
        "seed": spec.seed,
        "max_samples": d.max_samples,
    }
    if d.factory is not None:
        from midl_autok.factories import load_factory_data

        return load_factory_data(d.factory, options=d.options, **split)
    return load_dataset(
        d.name, path=d.path, target=d.target, options=dict(d.options) or None, **split
    )


def build_for_spec(
    spec: ExperimentSpec,
    data: Dataset,
    *,
    seed: int | None = None,
    ranks: KSchedule | None = None,
) -> MIDLNet:
    """Build the spec's model for ``data``, with parameters initialized from ``seed``.

    ``ranks``: a schedule whose per-layer MID-L ranks (:attr:`KSchedule.ranks`, from a rank
    co-search) replace the spec's ``gate_rank``/``light_rank``; a schedule without ranks, or
    None, keeps the spec's.
    """
    seed_everything(spec.seed if seed is None else seed)
    return model_for_spec(spec, data, ranks=ranks)


def model_for_spec(
    spec: ExperimentSpec, data: Dataset, *, ranks: KSchedule | None = None
) -> MIDLNet:
    """Build the spec's model for ``data`` (the built-in ``arch`` or ``model.factory``),
    without seeding: parameters come from the current global RNG, or from the dense weights
    in ``model.init_from`` (:func:`midl_autok._midlify.init_from_checkpoint`)."""
    if spec.model.factory is not None:
        from midl_autok.factories import FactoryNet, build_factory_model

        net = build_factory_model(
            spec.model.factory,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            vocab_size=data.vocab_size,
            options=spec.model.factory_options,
            probe=data.x_train[:2].cpu(),
        )
        if spec.model.init_from is not None:  # the user's module, named as the user wrote it
            _init_from(spec, data, net.net if isinstance(net, FactoryNet) else net, "either")
        return net
    options = {**spec.model.options(), **(ranks.rank_options() if ranks is not None else {})}
    model = build_model(
        spec.model.arch,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        vocab_size=data.vocab_size,
        **options,
    )
    if spec.model.init_from is not None:  # fine-tune from a dense model's weights
        _init_from(spec, data, model, "sequential")
    return model


def _init_from(spec: ExperimentSpec, data: Dataset, model: torch.nn.Module, layout: Layout) -> None:
    """``model.init_from``: ``model``'s MID-L layers (and every other tensor) from the dense
    checkpoint, calibrated on the first ``model.init_calibration`` training samples."""
    from midl_autok._midlify import init_from_checkpoint

    assert spec.model.init_from is not None
    n = spec.model.init_calibration
    calibration = None if n is None else data.x_train[:n]
    init_from_checkpoint(model, spec.model.init_from, calibration=calibration, layout=layout)
