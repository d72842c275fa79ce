"""Former home of the Ray backend: :mod:`midl_autok.search.ray`."""

from midl_autok.errors import SpecError

try:
    from midl_autok.search.ray.options import RayOptions
    from midl_autok.search.ray.run import node_ids, run_ray, run_ray_search
    from midl_autok.search.ray.runtime import check_resources, ray_connection
    from midl_autok.search.ray.searcher import SessionSearcher
    from midl_autok.search.ray.trainable import GPU_TAG, NODE_TAG, TRIAL_TAG
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    if not (exc.name or "").startswith("ray"):
        raise
    raise SpecError(
        "the Ray backend needs Ray Tune; install it with: pip install 'midl-autok[ray]'"
    ) from None
from midl_autok.search.ray import worker_device
from midl_autok.search.recording import PRUNED_TAG

__all__ = [
    "GPU_TAG",
    "NODE_TAG",
    "PRUNED_TAG",
    "TRIAL_TAG",
    "RayOptions",
    "SessionSearcher",
    "check_resources",
    "node_ids",
    "ray_connection",
    "run_ray",
    "run_ray_search",
    "worker_device",
]
