"""Compiled kernels behind MID-L's fast paths, each optional, each with a PyTorch fallback.

- :mod:`.cpu`: a small C++ extension (``torch.utils.cpp_extension.load_inline``) for the
  sparse eval path on CPU. It is built on first use -- never at import -- and cached in the
  torch extensions folder; without a working compiler the layer logs one warning and uses
  its pure-PyTorch paths. ``MIDL_AUTOK_NO_EXTENSIONS=1`` turns it off.
"""

from midl_autok.kernels.cpu import clear_cache, cpu_kernels, cpu_kernels_status, no_build

__all__ = ["clear_cache", "cpu_kernels", "cpu_kernels_status", "no_build"]
