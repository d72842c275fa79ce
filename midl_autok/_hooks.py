"""Whether a module's call can skip ``nn.Module.__call__``: no hook on it, and none global.

``nn.Module.__call__`` costs ~2 us per call; at batch 1 a small MID-L model spends a visible
share of its time there (a 784-512-512-10 MLP: ~8 of ~70 us). The eval fast paths
(:meth:`midl_autok.models.MIDLNet._run_body`, :class:`midl_autok.program.ProgramModule`) call
``forward`` directly only when these say no hook would have run.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules import module as _module

__all__ = ["global_hooks", "hook_free"]


def global_hooks() -> bool:
    """Whether any global module hook is registered (``torch.nn.modules.module``'s)."""
    m = _module
    return bool(
        m._global_forward_hooks
        or m._global_forward_pre_hooks
        or m._global_backward_hooks
        or m._global_backward_pre_hooks
        or m._global_forward_hooks_always_called
    )


def hook_free(module: nn.Module) -> bool:
    """Whether ``module`` itself has no forward or backward hook (global ones: see
    :func:`global_hooks`)."""
    return not (
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )
