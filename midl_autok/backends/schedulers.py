"""Former home of the early-stopping schedulers: :mod:`midl_autok.search.ray.schedulers`."""

from midl_autok.search.ray.schedulers import *  # noqa: F403
from midl_autok.search.ray.schedulers import __all__  # noqa: F401
