"""Where the code is running: plain eager mode, under ``torch.compile``, or inside a
``torch.func`` transform. Only host syncs and fused ``_foreach`` kernels care."""

from __future__ import annotations

import torch


def in_func_transform() -> bool:
    """True inside ``torch.func.vmap`` / ``grad`` / ``jvp`` / ``vjp``."""
    try:
        return torch._C._functorch.peek_interpreter_stack() is not None
    except AttributeError:  # pragma: no cover - torch without the functorch stack query
        return False


def can_sync() -> bool:
    """True in plain eager mode, False while traced by torch.compile or a torch.func transform."""
    return not torch.compiler.is_compiling() and not in_func_transform()
