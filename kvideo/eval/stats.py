"""Streaming float64 feature statistics (mergeable across processes) and the Inception Score."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from kvideo.checkpoint import load_file, save_safetensors

STATS_FORMAT = "kvideo-feature-stats-1"


@dataclass
class FeatureStats:
    """Count, sum and sum of outer products of feature vectors, accumulated in float64.

    Holds O(d²) numbers whatever the number of samples; two accumulators over disjoint
    samples `merge` into the accumulator of their union (so do processes, with `all_reduce`).
    """

    num_features: int
    count: int = 0
    total: np.ndarray = field(default=None, repr=False)  # (d,)
    outer: np.ndarray = field(default=None, repr=False)  # (d, d)

    def __post_init__(self) -> None:
        d = self.num_features
        self.total = np.zeros(d, np.float64) if self.total is None else np.asarray(self.total, np.float64)
        self.outer = np.zeros((d, d), np.float64) if self.outer is None else np.asarray(self.outer, np.float64)

    def update(self, features: np.ndarray | torch.Tensor) -> "FeatureStats":
        """Add a batch of features, shape (n, d)."""
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().double().numpy()
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"features must have shape (n, {self.num_features}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("features contain NaN or inf: the detector or its input is broken")
        self.count += x.shape[0]
        self.total += x.sum(axis=0)
        self.outer += x.T @ x
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Statistics of the union of both sample sets."""
        if other.num_features != self.num_features:
            raise ValueError(f"cannot merge {self.num_features}-d with {other.num_features}-d statistics")
        return FeatureStats(
            self.num_features, self.count + other.count, self.total + other.total, self.outer + other.outer
        )

    def mean_cov(self, ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance normalised by n - ddof: 0 as StyleGAN-V's FVD (np.cov(bias=True)),
        1 as VideoGPT, TF-GAN and the TensorFlow FVD. The protocol chooses."""
        if ddof not in (0, 1):
            raise ValueError(f"ddof must be 0 (divide by n) or 1 (by n - 1), got {ddof}")
        if self.count < 2:
            raise ValueError(f"need at least 2 samples for a covariance, have {self.count}")
        mean = self.total / self.count
        scatter = self.outer - self.count * np.outer(mean, mean)
        return mean, scatter / (self.count - ddof)

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | Path, protocol: Mapping[str, Any]) -> None:
        """Write atomically as safetensors, with the protocol settings that produced them."""
        tensors = {"total": torch.from_numpy(self.total), "outer": torch.from_numpy(self.outer)}
        meta = {"format": STATS_FORMAT, "count": str(self.count), "protocol": json.dumps(dict(protocol), sort_keys=True)}
        save_safetensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> tuple["FeatureStats", dict[str, Any]]:
        """(statistics, protocol settings) from a file written by `save`."""
        tensors, meta = load_file(path)
        if meta.get("format") != STATS_FORMAT:
            raise ValueError(f"{str(path)!r} is not a kvideo feature-statistics file (format {meta.get('format')!r})")
        total = tensors["total"].double().numpy()
        stats = cls(total.size, int(meta["count"]), total, tensors["outer"].double().numpy())
        return stats, json.loads(meta["protocol"])


def inception_score(probs: np.ndarray | torch.Tensor, splits: int = 10, *,
                    shuffle_seed: int | None = None) -> tuple[float, float]:
    """Mean and std over `splits` consecutive parts of exp(E_x KL(p(y|x) ‖ p(y))).

    `probs` are class probabilities, shape (n, classes); 0·log 0 counts as 0. With `shuffle_seed`
    the rows are first shuffled by `np.random.RandomState(shuffle_seed)` (StyleGAN-V: 42).
    """
    return _mean_std(split_scores(probs, splits, shuffle_seed=shuffle_seed))


def split_scores(probs: np.ndarray | torch.Tensor, splits: int, *, shuffle_seed: int | None = None) -> list[float]:
    """The IS of each of `splits` consecutive parts (after the optional seeded shuffle)."""
    p = probs.detach().cpu().double().numpy() if isinstance(probs, torch.Tensor) else np.array(probs, np.float64)
    _check_probabilities(p, splits)
    if shuffle_seed is not None:
        p = p[np.random.RandomState(shuffle_seed).permutation(p.shape[0])]
    n = p.shape[0]
    return [_split_score(p[i * n // splits:(i + 1) * n // splits]) for i in range(splits)]


def _mean_std(scores: list[float]) -> tuple[float, float]:
    return float(np.mean(scores)), float(np.std(scores))


def _split_score(part: np.ndarray) -> float:
    marginal = part.mean(axis=0, keepdims=True)
    ratio = np.divide(part, marginal, out=np.ones_like(part), where=part > 0)
    kl = np.sum(part * np.log(ratio), axis=1)  # (n,)
    return float(np.exp(kl.mean()))


def _check_probabilities(p: np.ndarray, splits: int) -> None:
    if p.ndim != 2:
        raise ValueError(f"probabilities must have shape (n, classes), got {p.shape}")
    if splits < 1 or p.shape[0] < splits:
        raise ValueError(f"need at least splits={splits} >= 1 samples, have {p.shape[0]}")
    if p.min() < 0 or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("rows are not probability vectors (negative, or not summing to 1): pass softmax outputs")
