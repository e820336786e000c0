"""Where the windows go: MONAI's dense grid, the fewest windows for an overlap, or one window.

Dense placement follows MONAI's ``sliding_window_inference``: an image smaller than the window is
zero-padded symmetrically to the window size; along each axis windows start every
``int(roi · (1 − overlap))`` voxels, the last one shifted back to end at the border. Windows are
listed in slab order (last axis outermost), the order :class:`~mhub_cpu.segment.merger.SlabStitcher`
needs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class WindowStrategy(StrEnum):
    """How windows are placed (``--windows``)."""

    DENSE = "dense"  #: MONAI's grid at the overlap, as 3D Slicer
    SPARSE = "sparse"  #: the fewest windows sharing at least the overlap; short axes get a fitted window
    WHOLE = "whole"  #: one window over the whole volume


def window_starts(length: int, roi: int, overlap: float) -> list[int]:
    """Start indices of windows of size ``roi`` along an axis of ``length`` (≥ roi) voxels (MONAI rule)."""
    if roi >= length:
        return [0]
    interval = max(int(roi * (1 - overlap)), 1)
    starts = []
    for index in range(int(np.ceil(length / interval))):
        start = index * interval
        if start + roi >= length:
            starts.append(length - roi)
            break
        starts.append(start)
    return starts


def padding_for(shape: tuple[int, ...], roi: tuple[int, ...]) -> list[tuple[int, int]]:
    """Symmetric zero padding that makes every axis at least ``roi`` long (extra voxel after)."""
    pads = []
    for length, size in zip(shape, roi):
        missing = max(size - length, 0)
        pads.append((missing // 2, missing - missing // 2))
    return pads


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows go on a (padded) volume, in slab order (last axis outermost)."""

    padded_shape: tuple[int, int, int]
    window: tuple[int, int, int]
    starts: list[tuple[int, int, int]]

    @property
    def count(self) -> int:
        return len(self.starts)


def _slab_order(per_axis: list[list[int]]) -> list[tuple[int, int, int]]:
    return [(x, y, z) for z, y, x in itertools.product(per_axis[2], per_axis[1], per_axis[0])]


def plan_windows(shape: tuple[int, int, int], roi: tuple[int, int, int], overlap: float) -> WindowPlan:
    """Dense MONAI-style window grid over ``shape`` (padded to at least ``roi``)."""
    padded = tuple(max(n, r) for n, r in zip(shape, roi))
    per_axis = [window_starts(n, r, overlap) for n, r in zip(padded, roi)]
    return WindowPlan(padded_shape=padded, window=roi, starts=_slab_order(per_axis))  # type: ignore[arg-type]


def _round_up(length: int, divisor: int) -> int:
    return -(-length // divisor) * divisor


def plan_sparse(shape: tuple[int, int, int], roi: tuple[int, int, int], min_overlap: float, divisor: int) -> WindowPlan:
    """The fewest windows that cover ``shape`` with neighbours sharing ≥ ``min_overlap`` of a window.

    An axis shorter than the window gets a window shrunk to its length rounded up to ``divisor``
    (the network's size multiple) instead of zero padding up to ``roi``; an axis longer than the
    window gets ``ceil((L − o) / (roi − o))`` windows (``o`` the overlap in voxels), spread evenly.
    """
    window, padded, per_axis = [], [], []
    for length, size in zip(shape, roi):
        if length <= size:
            fitted = min(size, _round_up(length, divisor))
            window.append(fitted)
            padded.append(fitted)
            per_axis.append([0])
            continue
        shared = int(np.ceil(min_overlap * size))
        count = int(np.ceil((length - shared) / (size - shared)))
        window.append(size)
        padded.append(length)
        per_axis.append(sorted({int(round(v)) for v in np.linspace(0, length - size, count)}))
    return WindowPlan(tuple(padded), tuple(window), _slab_order(per_axis))  # type: ignore[arg-type]


def plan_whole(shape: tuple[int, int, int], divisor: int) -> WindowPlan:
    """One window over the whole volume, each axis rounded up to ``divisor``."""
    window = tuple(_round_up(n, divisor) for n in shape)
    return WindowPlan(window, window, [(0, 0, 0)])  # type: ignore[arg-type]


def make_plan(
    shape: tuple[int, int, int], roi: tuple[int, int, int], strategy: WindowStrategy, overlap: float, divisor: int,
) -> WindowPlan:
    """Window plan for ``strategy`` over a volume of ``shape``."""
    if strategy == WindowStrategy.DENSE:
        return plan_windows(shape, roi, overlap)
    if strategy == WindowStrategy.SPARSE:
        return plan_sparse(shape, roi, overlap, divisor)
    if strategy == WindowStrategy.WHOLE:
        return plan_whole(shape, divisor)
    raise ValueError(f"unknown window strategy {strategy!r}")


def iterate_windows(volume: np.ndarray, plan: WindowPlan) -> Iterator[tuple[tuple[int, int, int], np.ndarray]]:
    """Yield ``(start, window)`` pairs of ``volume`` (already padded) in plan order."""
    rx, ry, rz = plan.window
    for x, y, z in plan.starts:
        yield (x, y, z), volume[x : x + rx, y : y + ry, z : z + rz]


