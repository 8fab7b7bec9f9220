"""Parameter trees: ``dict[str, Tensor]``, exactly what ``dict(model.named_parameters())`` gives.

Every function here is pure (returns new tensors) and works under ``torch.func`` transforms
and ``torch.compile``. The checks at the bottom raise one-line errors that name the fix.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ._runtime import in_func_transform

Tree = dict[str, Tensor]


def tree_add(a: Mapping[str, Tensor], b: Mapping[str, Tensor], alpha: float | Tensor = 1.0) -> Tree:
    """``a + alpha * b`` leaf by leaf (one fused kernel per leaf for a number ``alpha``)."""
    if isinstance(alpha, Tensor):
        return {k: a[k] + alpha * b[k] for k in a}
    return {k: torch.add(a[k], b[k], alpha=alpha) for k in a}


def tree_sub(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tree:
    """``a - b`` leaf by leaf."""
    return {k: a[k] - b[k] for k in a}


def tree_scale(a: Mapping[str, Tensor], s: float | Tensor) -> Tree:
    """``s * a`` leaf by leaf."""
    return {k: s * v for k, v in a.items()}


def tree_neg(a: Mapping[str, Tensor]) -> Tree:
    return {k: -v for k, v in a.items()}


def tree_dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """Euclidean inner product ``sum_k <a[k], b[k]>`` as a 0-d tensor."""
    return sum((torch.vdot(a[k].reshape(-1), b[k].reshape(-1)) for k in a), start=_zero(a))


def tree_norm(a: Mapping[str, Tensor]) -> Tensor:
    """Euclidean norm of the whole tree as a 0-d tensor."""
    if in_func_transform():  # _foreach_norm has no batching rule
        return torch.sqrt(tree_dot(a, a).real)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(a.values()))))


def tree_zeros_like(a: Mapping[str, Tensor]) -> Tree:
    return {k: torch.zeros_like(v) for k, v in a.items()}


def tree_detach(a: Mapping[str, Tensor]) -> Tree:
    return {k: v.detach() for k, v in a.items()}


def tree_size(a: Mapping[str, Tensor]) -> int:
    """Number of scalars in the tree."""
    return sum(v.numel() for v in a.values())


def tree_flatten(a: Mapping[str, Tensor]) -> Tensor:
    """Concatenate all leaves (in key order) into one vector."""
    return torch.cat([v.reshape(-1) for v in a.values()])


def tree_unflatten(vector: Tensor, like: Mapping[str, Tensor]) -> Tree:
    """Inverse of :func:`tree_flatten`: split ``vector`` into leaves shaped like ``like``."""
    out, start = {}, 0
    for k, v in like.items():
        out[k] = vector[start : start + v.numel()].reshape(v.shape)
        start += v.numel()
    return out


def _zero(a: Mapping[str, Tensor]) -> Tensor:
    first = next(iter(a.values()))
    return torch.zeros((), dtype=first.dtype, device=first.device)


# --------------------------------------------------------------------------- checks
def check_tree(tree: object, what: str) -> None:
    """Raise ``TypeError`` unless ``tree`` is a non-empty ``dict[str, floating Tensor]``."""
    if not isinstance(tree, Mapping) or not tree:
        raise TypeError(
            f"{what} must be a non-empty dict[str, Tensor] (got {type(tree).__name__}): "
            f"pass dict(module.named_parameters())"
        )
    for k, v in tree.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"{what}[{k!r}] is a {type(v).__name__}, not a Tensor: wrap it in torch.tensor")
        if not (v.is_floating_point() or v.is_complex()):
            raise TypeError(
                f"{what}[{k!r}] has integer dtype {v.dtype}; differentiable trees need floating "
                f"point: convert it with .float() or .double()"
            )


def check_same_dtype_device(trees: Mapping[str, Mapping[str, Tensor]]) -> None:
    """Raise ``TypeError`` unless every leaf of every named tree shares one dtype and device."""
    ref_name, ref_key, ref = None, None, None
    for name, tree in trees.items():
        for k, v in tree.items():
            if ref is None:
                ref_name, ref_key, ref = name, k, v
                continue
            if v.dtype != ref.dtype:
                raise TypeError(
                    f"dtype mismatch: {name}[{k!r}] is {v.dtype} but {ref_name}[{ref_key!r}] is "
                    f"{ref.dtype}: convert both trees to one dtype (e.g. .double() on model and hparams)"
                )
            if v.device != ref.device:
                raise TypeError(
                    f"device mismatch: {name}[{k!r}] is on {v.device} but {ref_name}[{ref_key!r}] is on "
                    f"{ref.device}: move both trees to one device with .to(device)"
                )


def check_like(tree: Mapping[str, Tensor], like: Mapping[str, Tensor], what: str, ref: str) -> None:
    """Raise ``ValueError`` unless ``tree`` has the keys and leaf shapes of ``like``."""
    if set(tree) != set(like):
        missing, extra = sorted(set(like) - set(tree)), sorted(set(tree) - set(like))
        raise ValueError(f"{what} does not match {ref}: missing keys {missing}, extra keys {extra}")
    for k in like:
        if tree[k].shape != like[k].shape:
            raise ValueError(
                f"shape mismatch: {what}[{k!r}] is {tuple(tree[k].shape)} but {ref}[{k!r}] is "
                f"{tuple(like[k].shape)}"
            )
    check_same_dtype_device({what: tree, ref: like})
