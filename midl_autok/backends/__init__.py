"""The search backends' former home, now :mod:`midl_autok.search` (this name stays importable:
``midl_autok.backends.run_search``, ``open_search``, ``SearchSession``, ... and the
submodules ``session``, ``evaluate``, ``local``, ``ray``, ``schedulers``)."""

from __future__ import annotations

from typing import Any

from midl_autok.search import BACKENDS, get_backend

__all__ = ["BACKENDS", "get_backend"]  # and every name of midl_autok.search, on first use


def __getattr__(name: str) -> Any:
    import midl_autok.search as search

    return getattr(search, name)
