"""Build-on-first-use loader for the CPU kernels (source: ``csrc/*.cpp`` and the headers they
include, ``csrc/*.h``, shipped as package data).

:func:`cpu_kernels` compiles the extension the first time it is called in a process (or
loads the cached build from :func:`build_directory`, under ``$TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``; a new build is announced as an INFO record of the
``midl_autok.kernels`` logger, which the CLI prints) and returns
the loaded module, or ``None`` when it cannot be built (no compiler, a failed build, or
``MIDL_AUTOK_NO_EXTENSIONS=1``). A failure is logged once as a warning on the
``midl_autok.kernels`` logger; callers then use their pure-PyTorch path. Loading the module
also registers the CPU kernel of the custom op ``midl_autok::midl_eval``
(``csrc/midl_ops.cpp``; the op itself is defined in :mod:`midl_autok.ops`).

The build uses ``-O3`` and, on x86-64 with GCC/Clang, ``-march=native`` (the sources pick
their SIMD width from it at compile time: AVX-512, else AVX2 + FMA, else generic loops;
``csrc/simd.h``); the module name carries a hash of the sources and headers, of this CPU's
feature flags and of the environment (the torch installation and Python's headers), so a home
folder shared by machines with different CPUs, or by several virtual environments, keeps one
build for each instead of rebuilding in turn.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

__all__ = ["build_directory", "clear_cache", "cpu_kernels", "cpu_kernels_status", "no_build"]

log = logging.getLogger("midl_autok.kernels")

DISABLE_ENV = "MIDL_AUTOK_NO_EXTENSIONS"

# The C++ sources and the headers they include (simd.h: the SIMD layer), shipped as package
# data (pyproject: kernels/csrc/*); the headers are part of the build's name, not compiled alone.
SOURCES = tuple(sorted((Path(__file__).parent / "csrc").glob("*.cpp")))
HEADERS = tuple(sorted((Path(__file__).parent / "csrc").glob("*.h")))

_lock = threading.Lock()
_module: ModuleType | None = None
_status = "not built"  # "not built" | "ready" | "disabled: ..." | "unavailable: ..."
_local = threading.local()  # .no_build: depth of no_build() blocks in this thread


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _toolchain() -> list[str]:
    """What else goes into the build besides source and flags: the torch it links against and
    Python's headers. torch rebuilds an extension whose ``build.ninja`` changed, and the
    include paths in it name the torch installation, so without these in the module name two
    virtual environments sharing ``~/.cache/torch_extensions`` rebuilt each other's kernel
    (~30 s) on every switch. (Not ``sys.executable``: ``python`` and ``python3`` of one venv
    are the same build.)"""
    import sysconfig

    import torch

    include = sysconfig.get_paths().get("include", "")
    return [os.path.dirname(torch.__file__), torch.__version__, include, sys.version]


def _build_flags() -> list[str]:
    flags = ["-O3"]
    if sys.platform == "win32":
        return ["/O2", "/openmp"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags.append("-march=native")
    if sys.platform != "darwin":  # Apple clang has no -fopenmp by default
        flags.append("-fopenmp")
    return flags


def _module_name() -> str:
    """The extension's name: a hash of everything its build depends on. That includes where
    the sources are: torch's ``build.ninja`` names them by path, so two checkouts of the same
    version (git worktrees, a clone next to an installed copy) under one name rebuilt each
    other's kernel on every switch."""
    files = (*SOURCES, *HEADERS)
    parts = [*(p.read_text(encoding="utf-8") for p in files), *_build_flags(), _cpu_flags()]
    parts += [str(p.resolve()) for p in files]
    parts += _toolchain()
    return f"midl_autok_cpu_{hashlib.sha256(chr(10).join(parts).encode()).hexdigest()[:12]}"


def build_directory() -> str:
    """Where the build lives: ``$TORCH_EXTENSIONS_DIR`` (default
    ``~/.cache/torch_extensions``) / ``midl_autok`` / the module name."""
    import torch.utils.cpp_extension as ext

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or ext.get_default_build_root()
    return os.path.join(root, "midl_autok", _module_name())


def _is_built(directory: str) -> bool:
    name = os.path.basename(directory)
    try:
        files = os.listdir(directory)
    except OSError:
        return False
    return any(f.startswith(name + ".") and f.endswith((".so", ".pyd", ".dylib")) for f in files)


def _build() -> ModuleType:
    import torch.utils.cpp_extension as ext

    cflags = _build_flags()
    directory = build_directory()
    os.makedirs(directory, exist_ok=True)
    ldflags = ["-fopenmp"] if "-fopenmp" in cflags else []
    with _build_lock(directory):
        return ext.load(
            name=os.path.basename(directory),
            sources=[str(p) for p in SOURCES],
            extra_cflags=cflags,
            extra_ldflags=ldflags,
            build_directory=directory,
            verbose=False,
        )


@contextmanager
def _build_lock(directory: str) -> Iterator[None]:
    """One build of ``directory`` at a time, across processes, with a lock the OS releases
    when its process dies.

    torch guards a build with a plain ``lock`` file (its ``FileBaton``) that other processes
    poll until it disappears; a build killed midway (Ctrl-C during the first-use compile, a
    SIGKILL, an OOM kill) leaves that file behind, and every later run then waits forever with
    no message. Under our ``flock`` no other process of ours is building, so a ``lock`` file
    found there is such a leftover and is removed before torch looks.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; torch's own baton only
        yield
        return
    with open(directory + ".build-lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            leftover = os.path.join(directory, "lock")
            if os.path.exists(leftover):
                log.warning(
                    "removing a stale build lock left by an interrupted compile: %s", leftover
                )
                os.remove(leftover)
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def cpu_kernels(*, build: bool = True) -> ModuleType | None:
    """The compiled CPU kernels, building them on the first call; ``None`` if unavailable.

    With ``build=False`` it only returns an already loaded module (never compiles).
    """
    global _module, _status
    if _module is not None or _status != "not built" or not build:
        return _module
    if getattr(_local, "no_build", 0):
        return None
    with _lock:
        if _module is not None or _status != "not built":
            return _module
        if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
            _status = f"disabled: {DISABLE_ENV} is set"
            log.debug("MID-L CPU kernels %s; using the PyTorch paths", _status)
            return None
        start = time.perf_counter()
        compiling = False
        try:
            where = build_directory()
            compiling = not _is_built(where)
            if compiling:  # the CLI shows INFO records of this logger on stderr
                log.info(
                    "compiling the MID-L CPU kernels (first use in this environment, "
                    "usually under a minute; cached in %s)",
                    where,
                )
            _module = _build()
        except Exception as exc:  # no compiler, failed build, missing headers, ...
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            _status = f"unavailable: {reason}"
            log.warning(
                "MID-L CPU kernels could not be built (%s); MID-L layers fall back to "
                "PyTorch ops (same results, slower). Set %s=1 to skip the build.",
                reason,
                DISABLE_ENV,
            )
            return None
        _status = "ready"
        log.log(
            logging.INFO if compiling else logging.DEBUG,
            "MID-L CPU kernels %s in %.1f s",
            "compiled" if compiling else "loaded",
            time.perf_counter() - start,
        )
        return _module


def clear_cache() -> None:
    """Drop the kernels' cached copies of parameters (the block kernel's W packed by group,
    the neuron kernel's stacked and transposed thin matrices). They are keyed by each
    parameter's version counter and cleared whenever a MID-L layer switches between train
    and eval mode; call this after changing parameters in a way that bumps no version
    counter while the model stays in eval mode (a fused optimizer's step, ``Adam(fused=True)``,
    or a write through ``param.data``). Nothing to do before the kernels are loaded."""
    if _module is not None:
        _module.midl_cache_clear()


@contextmanager
def no_build() -> Iterator[None]:
    """Within this block (this thread), :func:`cpu_kernels` never starts a build: callers get
    the kernels only if they are already loaded. The trainer evaluates inside it, so a small
    last evaluation batch never stalls a trial on a compile."""
    _local.no_build = getattr(_local, "no_build", 0) + 1
    try:
        yield
    finally:
        _local.no_build -= 1


def cpu_kernels_status() -> str:
    """``not built``, ``ready``, ``disabled: ...`` or ``unavailable: ...``."""
    return _status
