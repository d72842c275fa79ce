"""midl-autok: search per-layer, per-epoch Top-k schedules for MID-L networks."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
