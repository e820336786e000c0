"""Importance maps: how much each voxel of a window counts when overlapping windows are summed."""

from __future__ import annotations

from enum import StrEnum

import numpy as np

#: σ of the Gaussian importance map as a fraction of the window size (MONAI default).
GAUSSIAN_SIGMA_SCALE = 0.125


class BlendMode(StrEnum):
    """Window weights (``--blend``, MONAI's ``mode``)."""

    GAUSSIAN = "gaussian"  #: centre voxels count more (MONAI and Slicer default)
    CONSTANT = "constant"  #: every voxel counts the same


def gaussian_importance(roi: tuple[int, ...], sigma_scale: float = GAUSSIAN_SIGMA_SCALE) -> np.ndarray:
    """Separable Gaussian weight map over a window, peak 1, clamped to its smallest value ≥ 1e-3."""
    weights = np.ones((), dtype=np.float32)
    for size in roi:
        x = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
        sigma = size * sigma_scale
        weights = np.multiply.outer(weights, np.exp(x**2 / (-2 * sigma**2)).astype(np.float32))
    return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def constant_importance(roi: tuple[int, ...]) -> np.ndarray:
    """Uniform weights (MONAI ``mode="constant"``)."""
    return np.ones(roi, dtype=np.float32)


def importance_map(roi: tuple[int, ...], blend: BlendMode) -> np.ndarray:
    """The weights of ``blend`` over a window of size ``roi``."""
    if blend == BlendMode.GAUSSIAN:
        return gaussian_importance(roi)
    if blend == BlendMode.CONSTANT:
        return constant_importance(roi)
    raise ValueError(f"unknown blend mode {blend!r}")
