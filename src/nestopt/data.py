"""Embedded data sets (no download) and a resumable, seeded minibatch stream.

Every data set is returned as a :class:`Split` of tensors; :class:`BatchStream` turns a pair
``(x, y)`` into an endless stream of ``(x, y, index)`` minibatches whose position is part of a
checkpoint, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Split:
    """Train / validation / test tensors of a classification data set."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    n_features: int
    n_classes: int
    name: str


def _split(x: np.ndarray, y: np.ndarray, n_train: int, n_val: int, seed: int, name: str) -> Split:
    if n_train + n_val >= len(x):
        raise ValueError(f"{name}: n_train + n_val = {n_train + n_val} leaves no test data (have {len(x)})")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    mean, std = x[:n_train].mean(0), x[:n_train].std(0)  # statistics of the train part only
    std[std < 1e-8] = 1.0  # constant features (digits' corner pixels) stay put
    xt = torch.as_tensor((x - mean) / std, dtype=torch.get_default_dtype())
    yt = torch.as_tensor(y, dtype=torch.long)
    parts = [slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, None)]
    train, val, test = ((xt[s], yt[s]) for s in parts)
    return Split(train, val, test, xt.shape[1], int(yt.max()) + 1, name)


def digits(n_train: int = 500, n_val: int = 500, seed: int = 0) -> Split:
    """scikit-learn's 8x8 handwritten digits (1797 images, 64 features, 10 classes), shipped with
    scikit-learn; features standardised with the train part's statistics; the rest is test."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return _split(data.data.astype(np.float64), data.target, n_train, n_val, seed, "digits")


def mnist1d(n_samples: int = 5000, n_train: int = 3000, n_val: int = 1000, seed: int = 0) -> Split:
    """MNIST-1D (Greydanus, 2020): 40-sample 1-D signals of 10 digit templates, generated offline
    by the ``mnist1d`` package from its templates (no download)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = n_samples, seed
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float64)
    y = np.concatenate([data["y"], data["y_test"]])
    return _split(x, y, n_train, n_val, seed, "mnist1d")


class BatchStream:
    """Endless minibatches ``(x, y, index)`` of a data set, reshuffled every epoch.

    The permutation of epoch ``e`` depends only on ``(seed, e)``, so the stream's whole state is
    ``(epoch, position)`` (:meth:`state_dict`). Incomplete final batches are dropped so every
    batch has ``batch_size`` examples (stable shapes: no recompilation under ``torch.compile``).
    """

    def __init__(self, *tensors: Tensor, batch_size: int, seed: int = 0, shuffle: bool = True) -> None:
        if not tensors:
            raise ValueError("BatchStream needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"BatchStream tensors differ in length: {[len(t) for t in tensors]}")
        if not batch_size >= 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors, self.n = tensors, n
        self.batch_size, self.seed, self.shuffle = min(batch_size, n), seed, shuffle
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> tuple[Tensor, ...]:
        if self.position + self.batch_size > self.n:
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        index = self._order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return (*(t[index] for t in self.tensors), index)

    def take(self, k: int) -> list[tuple[Tensor, ...]]:
        return [next(self) for _ in range(k)]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)


def concat_batches(batches: list[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """One batch holding all of ``batches`` (element-wise concatenation)."""
    if len(batches) == 1:
        return batches[0]
    return tuple(torch.cat(parts) for parts in zip(*batches, strict=True))
