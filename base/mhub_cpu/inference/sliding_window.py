"""Sliding-window inference with Gaussian blending and slab-wise (memory-bounded) stitching.

Window placement follows MONAI's ``sliding_window_inference``: an image smaller than the window is
zero-padded symmetrically to the window size; along each axis windows start every
``int(roi · (1 − overlap))`` voxels, the last one shifted back to end at the border. Each window's
logits are weighted by a Gaussian importance map (σ = 0.125 · roi, clamped to its smallest value)
and summed. The label of a voxel is the argmax of that weighted sum, which equals MONAI's argmax of
the softmax of the normalised sum, because the weight sum is positive and shared by all classes.

Stitching never holds the classes × volume buffer: windows run in order of their start along the
last axis (the slab axis), and as soon as the next window starts further along that axis, the
planes before it can receive no more contributions and are reduced to labels.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..progress import ProgressCounter

#: σ of the Gaussian importance map as a fraction of the window size (MONAI default).
GAUSSIAN_SIGMA_SCALE = 0.125


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


#: Window placement strategies: MONAI's dense grid, the fewest windows for a minimum overlap, or
#: one window over the whole volume.
STRATEGIES = ("dense", "sparse", "whole")


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


def make_plan(shape: tuple[int, int, int], roi: tuple[int, int, int], strategy: str, overlap: float, divisor: int) -> WindowPlan:
    """Window plan for ``strategy`` (see :data:`STRATEGIES`)."""
    if strategy == "dense":
        return plan_windows(shape, roi, overlap)
    if strategy == "sparse":
        return plan_sparse(shape, roi, overlap, divisor)
    if strategy == "whole":
        return plan_whole(shape, divisor)
    raise ValueError(f"unknown window strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


class SlabStitcher:
    """Accumulates weighted window logits and finalises label planes along the last axis.

    Holds a buffer of ``classes × X × Y × roi_z`` floats covering the planes that windows not yet
    processed may still touch. Windows must arrive with non-decreasing start along the last axis.
    Every step works on ``workers`` slices along X in parallel threads (NumPy releases the GIL;
    the network is idle meanwhile), and none copies the buffer as a whole.
    """

    def __init__(
        self, shape: tuple[int, int, int], roi: tuple[int, int, int], classes: int, weights: np.ndarray,
        workers: int | None = None,
    ):
        self.shape = shape
        self.roi = roi
        self.weights = weights
        self.labels = np.zeros(shape, dtype=np.uint8 if classes <= 256 else np.uint16)
        self._buffer = np.zeros((classes, shape[0], shape[1], roi[2]), dtype=np.float32)
        self._z0 = 0  # first plane held in the buffer
        self._workers = max(1, workers or os.cpu_count() or 1)

    def add(self, start: tuple[int, int, int], logits: np.ndarray) -> None:
        """Add one window's logits (classes × roi, float32, overwritten) placed at ``start``."""
        x, y, z = start
        if z < self._z0:
            raise ValueError("windows must arrive in non-decreasing order along the last axis")
        self._advance_to(z)
        rx, ry, rz = self.roi
        offset = z - self._z0
        target = self._buffer[:, x : x + rx, y : y + ry, offset : offset + rz]

        def accumulate(part: slice) -> None:
            chunk = logits[:, part]
            chunk *= self.weights[part]  # in place: no second classes × window temporary
            target[:, part] += chunk

        self._in_parallel(accumulate, rx)

    def _advance_to(self, z: int) -> None:
        """Finalise planes [z0, z) and slide the buffer so that it starts at plane ``z``."""
        step = z - self._z0
        if step <= 0:
            return
        done = min(step, self._buffer.shape[3])
        self._finalise(done)
        kept = self._buffer.shape[3] - done

        def slide(part: slice) -> None:
            for channel in self._buffer[:, part]:  # overlapping copy: NumPy buffers it, so one class at a time
                channel[..., :kept] = channel[..., done:]
                channel[..., kept:] = 0

        self._in_parallel(slide, self.shape[0])
        self._z0 = z

    def _finalise(self, planes: int) -> None:
        """Labels of the first ``planes`` buffered planes: ``argmax`` over classes, one class at a time.

        Same result as ``np.argmax(buffer[..., :planes], axis=0)`` (first maximum wins), without
        the contiguous classes × planes copy NumPy makes for a reduction over the first axis.
        """
        z0 = self._z0

        def reduce(part: slice) -> None:
            best = self._buffer[0, part, :, :planes].copy()
            labels = self.labels[part, :, z0 : z0 + planes]
            labels[...] = 0
            for index in range(1, self._buffer.shape[0]):
                scores = self._buffer[index, part, :, :planes]
                labels[scores > best] = index
                np.maximum(best, scores, out=best)

        self._in_parallel(reduce, self.shape[0])

    def _in_parallel(self, work: Callable[[slice], None], extent: int) -> None:
        """Run ``work`` on up to ``workers`` contiguous slices of ``range(extent)``, in threads."""
        bounds = np.linspace(0, extent, min(self._workers, extent) + 1).astype(int)
        parts = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        if len(parts) == 1:
            work(parts[0])
            return
        with ThreadPoolExecutor(len(parts)) as pool:
            for result in [pool.submit(work, part) for part in parts]:
                result.result()  # re-raises a worker's exception

    def finish(self) -> np.ndarray:
        """Finalise all remaining planes and return the label volume."""
        remaining = self.shape[2] - self._z0
        if remaining > 0:
            self._finalise(remaining)
        self._z0 = self.shape[2]
        return self.labels


def iterate_windows(volume: np.ndarray, plan: WindowPlan) -> Iterator[tuple[tuple[int, int, int], np.ndarray]]:
    """Yield ``(start, window)`` pairs of ``volume`` (already padded) in plan order."""
    rx, ry, rz = plan.window
    for x, y, z in plan.starts:
        yield (x, y, z), volume[x : x + rx, y : y + ry, z : z + rz]


def sliding_window_labels(
    volume: np.ndarray,
    run_window: Callable[[np.ndarray], np.ndarray],
    plan: WindowPlan,
    classes: int,
    blend: str = "gaussian",
    skip_window: Callable[[np.ndarray], bool] | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, int]:
    """Label map of ``volume`` (x, y, z float32) from a window-wise network.

    Args:
        volume: Preprocessed image at model resolution.
        run_window: Maps one window (``plan.window``-shaped float32) to its logits (classes × window).
        plan: Window placement over ``volume`` (from :func:`make_plan` on ``volume.shape``).
        classes: Number of output channels.
        blend: ``gaussian`` or ``constant`` window weights.
        skip_window: Optional predicate; a window for which it is true is not run and contributes
            nothing (its voxels become background unless another window covers them).
        workers: Threads for stitching (default: all CPUs).

    Returns:
        The uint8/uint16 label map on ``volume``'s grid and the number of windows run.
    """
    pads = [(0, 0)] * 3
    if plan.padded_shape != volume.shape:
        pads = padding_for(volume.shape, plan.padded_shape)
    padded = np.pad(volume, pads) if any(p != (0, 0) for p in pads) else volume
    weights = gaussian_importance(plan.window) if blend == "gaussian" else constant_importance(plan.window)
    stitcher = SlabStitcher(plan.padded_shape, plan.window, classes, weights, workers)
    progress = ProgressCounter("window", plan.count)
    run = 0
    for done, (start, window) in enumerate(iterate_windows(padded, plan), start=1):
        if skip_window is None or not skip_window(window):
            stitcher.add(start, run_window(np.ascontiguousarray(window)))
            run += 1
        progress.update(done)
    labels = stitcher.finish()
    crop = tuple(slice(before, before + n) for (before, _), n in zip(pads, volume.shape))
    return labels[crop], run
