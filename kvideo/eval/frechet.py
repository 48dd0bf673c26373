"""Fréchet distance between Gaussians, in float64, stable on rank-deficient covariances."""
from __future__ import annotations

import numpy as np


def _as_matrix(sigma: np.ndarray, name: str) -> np.ndarray:
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
        raise ValueError(f"{name} must be a square covariance matrix, got shape {sigma.shape}")
    if not np.all(np.isfinite(sigma)):
        raise ValueError(f"{name} has non-finite entries (NaN or inf): were the features finite?")
    return (sigma + sigma.T) / 2


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix (round-off negative eigenvalues count as 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh(sigma)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 @ sigma2)^{1/2}) for PSD matrices.

    sigma1 @ sigma2 has the eigenvalues of the symmetric PSD matrix s @ sigma2 @ s with
    s = sigma1^{1/2}, so the trace is the sum of the square roots of its eigenvalues: no
    general `sqrtm`, no complex round-off, and singular covariances need no epsilon. No
    eigenvalue is dropped by a rank tolerance (only round-off negatives are set to 0): that
    keeps the result equal to SciPy's `sqrtm` formula on ill-conditioned covariances.
    """
    root = _psd_sqrt(_as_matrix(sigma1, "sigma1"))
    inner = root @ _as_matrix(sigma2, "sigma2") @ root
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖mu1 - mu2‖² + tr(sigma1) + tr(sigma2) - 2·tr((sigma1 sigma2)^{1/2}), in float64."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = _as_matrix(sigma1, "sigma1"), _as_matrix(sigma2, "sigma2")
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must be vectors of one size, got shapes {mu1.shape} and {mu2.shape}")
    if sigma1.shape != (mu1.size, mu1.size) or sigma2.shape != sigma1.shape:
        raise ValueError(
            f"covariances {sigma1.shape} and {sigma2.shape} do not match the mean size {mu1.size}"
        )
    if np.array_equal(mu1, mu2) and np.array_equal(sigma1, sigma2):
        return 0.0  # identical Gaussians: exactly 0, not the round-off of the trace formula
    mean_term = float(np.sum((mu1 - mu2) ** 2))
    trace_term = float(np.trace(sigma1) + np.trace(sigma2)) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return mean_term + trace_term
