"""Memory model of sliding-window inference, and window sizes that fit a memory budget.

Peak memory during inference is dominated by three terms, all linear in voxels:

- the network's activations inside OpenVINO: about ``ACTIVATION_TENSORS`` full-resolution feature
  maps of ``init_filters`` float32 channels per window voxel, plus the window's logits;
- the stitching buffer: ``classes × X × Y × window_z`` float32 (see ``SlabStitcher``);
- the preprocessed volume, its padded copy and the label map.

``ACTIVATION_TENSORS`` was measured with ``mhub-cpu bench`` (workload W1: SegResNetDS,
init_filters 32, 25 classes, dense 224×224×144 windows, OpenVINO 2026.4 f32 on CPU): 7.7 GB peak
RSS, i.e. about 6.5 feature maps of 32 float32 channels per window voxel beyond the logits and
the stitching buffer. INT8 models need less; the estimate is for f32.
"""

from __future__ import annotations

from ..errors import ProcessingError
from .sliding_window import WindowPlan, make_plan

ACTIVATION_TENSORS = 6.5
#: Python, NumPy, OpenVINO runtime and the compiled model, in MiB.
BASELINE_MB = 450.0
MIB = 2**20


def estimated_peak_mb(plan: WindowPlan, volume_shape: tuple[int, int, int], classes: int, init_filters: int) -> float:
    """Estimated peak RSS (MiB) of inference with ``plan`` on a model-grid volume of ``volume_shape``."""
    wx, wy, wz = plan.window
    window_voxels = wx * wy * wz
    network = window_voxels * (ACTIVATION_TENSORS * init_filters + classes) * 4
    px, py, _ = plan.padded_shape
    stitch = classes * px * py * wz * 4
    volumes = volume_shape[0] * volume_shape[1] * volume_shape[2] * (4 + 4 + 1)
    return BASELINE_MB + (network + stitch + volumes) / MIB


def plan_within_memory(
    volume_shape: tuple[int, int, int], roi: tuple[int, int, int], strategy: str, overlap: float, divisor: int,
    classes: int, init_filters: int, max_memory_mb: float | None,
) -> WindowPlan:
    """The plan for ``strategy``, with the window shrunk until the estimated peak fits ``max_memory_mb``.

    Each step shrinks by ``divisor`` the axis whose shrinking lowers the estimate most; that is
    usually the slab axis (z), which sizes both the window and the stitching buffer.

    Raises:
        ProcessingError: when even the smallest window (2 × divisor per axis) does not fit.
    """
    window = list(roi)
    while True:
        plan = make_plan(volume_shape, tuple(window), strategy, overlap, divisor)  # type: ignore[arg-type]
        if max_memory_mb is None or estimated_peak_mb(plan, volume_shape, classes, init_filters) <= max_memory_mb:
            return plan
        candidates = []
        for axis in range(3):
            if plan.window[axis] > 2 * divisor:
                smaller = list(plan.window)
                smaller[axis] -= divisor
                trial = make_plan(volume_shape, tuple(smaller), strategy, overlap, divisor)  # type: ignore[arg-type]
                candidates.append((estimated_peak_mb(trial, volume_shape, classes, init_filters), smaller))
        if not candidates:
            needed = estimated_peak_mb(plan, volume_shape, classes, init_filters)
            raise ProcessingError(f"--max-memory {max_memory_mb:.0f} MiB is too small: the smallest window needs about {needed:.0f} MiB")
        window = min(candidates)[1]
