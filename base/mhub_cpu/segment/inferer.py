"""Sliding-window inference: split the volume into windows, run the network, merge into labels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mhub_cpu.core.progress import ProgressCounter
from mhub_cpu.runtime.head import ClassHead
from mhub_cpu.segment.merger import SlabStitcher
from mhub_cpu.segment.splitter import WindowPlan, iterate_windows, padding_for
from mhub_cpu.segment.weights import BlendMode, importance_map


def sliding_window_labels(
    volume: np.ndarray,
    run_window: Callable[[np.ndarray], np.ndarray],
    plan: WindowPlan,
    classes: int,
    blend: BlendMode = BlendMode.GAUSSIAN,
    skip_window: Callable[[np.ndarray], bool] | None = None,
    workers: int | None = None,
    head: ClassHead | None = None,
) -> tuple[np.ndarray, int]:
    """Label map of ``volume`` (x, y, z float32) from a window-wise network.

    Args:
        volume: Preprocessed image at model resolution.
        run_window: Maps one window (``plan.window``-shaped float32) to its logits (classes × window),
            or with ``head`` to the feature maps the head takes (features × window).
        plan: Window placement over ``volume`` (from :func:`make_plan` on ``volume.shape``).
        classes: Number of output channels.
        blend: Window weights.
        skip_window: Optional predicate; a window for which it is true is not run and contributes
            nothing (its voxels become background unless another window covers them).
        workers: Threads for stitching (default: all CPUs).
        head: The network's class head, split off (:mod:`mhub_cpu.runtime.head`): applied in chunks
            while stitching, so that no window's logits exist in full.

    Returns:
        The uint8/uint16 label map on ``volume``'s grid and the number of windows run.
    """
    pads = [(0, 0)] * 3
    if plan.padded_shape != volume.shape:
        pads = padding_for(volume.shape, plan.padded_shape)
    padded = np.pad(volume, pads) if any(p != (0, 0) for p in pads) else volume
    weights = importance_map(plan.window, blend)
    stitcher = SlabStitcher(plan.padded_shape, plan.window, classes, weights, workers)
    progress = ProgressCounter("window", plan.count)
    run = 0
    for done, (start, window) in enumerate(iterate_windows(padded, plan), start=1):
        if skip_window is None or not skip_window(window):
            stitcher.add(start, run_window(np.ascontiguousarray(window)), head)
            run += 1
        progress.update(done)
    labels = stitcher.finish()
    crop = tuple(slice(before, before + n) for (before, _), n in zip(pads, volume.shape))
    return labels[crop], run
