"""Former home of the local backend: :mod:`midl_autok.search.local`."""

from midl_autok.search.local import SearchCallback, run_local, run_search

__all__ = ["SearchCallback", "run_local", "run_search"]
