"""Memory model of sliding-window inference, and window sizes that fit a memory budget.

Peak memory during inference is dominated by three terms, all linear in voxels:

- the network inside OpenVINO: about ``ACTIVATION_TENSORS`` full-resolution feature maps of
  ``init_filters`` float32 channels per window voxel, plus ``LOGIT_COPIES`` copies of the window's
  logits (the last layer's result and its reordered output tensor);
- the stitching buffer: ``classes × X × Y × window_z`` float32 (see ``SlabStitcher``);
- the preprocessed volume, its padded copy and the label map.

The two constants are fitted to two runs of ``mhub-cpu bench`` (OpenVINO 2026.4 on CPU), one with
few classes and large windows, one with many classes and thin windows:

- W1, f32: SegResNetDS init_filters 32, 25 classes, dense 224×224×144 windows: 6354 MiB peak RSS;
- W3, INT8: the same architecture with 118 classes, sparse 128×144×48 windows: 3412 MiB.

Solving both gives 4.66 feature maps and 1.39 logit copies; the constants round them up. INT8 models
need somewhat less for their feature maps, so the estimate errs on the safe side for them.
"""

from __future__ import annotations

import itertools

from ..errors import ProcessingError
from .sliding_window import WindowPlan, make_plan

ACTIVATION_TENSORS = 4.7
LOGIT_COPIES = 1.5
#: Python, NumPy, OpenVINO runtime and the compiled model, in MiB.
BASELINE_MB = 450.0
MIB = 2**20


def estimated_peak_mb(plan: WindowPlan, volume_shape: tuple[int, int, int], classes: int, init_filters: int) -> float:
    """Estimated peak RSS (MiB) of inference with ``plan`` on a model-grid volume of ``volume_shape``."""
    wx, wy, wz = plan.window
    window_voxels = wx * wy * wz
    network = window_voxels * (ACTIVATION_TENSORS * init_filters + LOGIT_COPIES * classes) * 4
    px, py, _ = plan.padded_shape
    stitch = classes * px * py * wz * 4
    volumes = volume_shape[0] * volume_shape[1] * volume_shape[2] * (4 + 4 + 1)
    return BASELINE_MB + (network + stitch + volumes) / MIB


def plan_within_memory(
    volume_shape: tuple[int, int, int], roi: tuple[int, int, int], strategy: str, overlap: float, divisor: int,
    classes: int, init_filters: int, max_memory_mb: float | None,
) -> WindowPlan:
    """The plan for ``strategy``; under a budget, the window that fits it and computes the fewest voxels.

    Without a budget, or when the model's window fits, the plan uses the model's window. Otherwise
    every window with sides from ``2 × divisor`` to the model's window in steps of ``divisor`` is
    planned, and among those whose estimated peak fits ``max_memory_mb`` the one with the fewest
    computed voxels (windows × window size, i.e. network work) wins; ties go to the larger window.

    Raises:
        ProcessingError: when even the smallest window (2 × divisor per axis) does not fit.
    """
    full = make_plan(volume_shape, roi, strategy, overlap, divisor)
    if max_memory_mb is None or estimated_peak_mb(full, volume_shape, classes, init_filters) <= max_memory_mb:
        return full
    best: tuple[tuple[int, int], WindowPlan] | None = None
    sides = [range(2 * divisor, max(side, 2 * divisor) + 1, divisor) for side in roi]
    for window in itertools.product(*sides):
        plan = make_plan(volume_shape, window, strategy, overlap, divisor)
        if estimated_peak_mb(plan, volume_shape, classes, init_filters) > max_memory_mb:
            continue
        voxels = plan.window[0] * plan.window[1] * plan.window[2]
        key = (plan.count * voxels, -voxels)
        if best is None or key < best[0]:
            best = (key, plan)
    if best is None:
        smallest = make_plan(volume_shape, (2 * divisor,) * 3, strategy, overlap, divisor)
        needed = estimated_peak_mb(smallest, volume_shape, classes, init_filters)
        raise ProcessingError(f"--max-memory {max_memory_mb:.0f} MiB is too small: the smallest window needs about {needed:.0f} MiB")
    return best[1]
