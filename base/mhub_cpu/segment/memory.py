"""Memory model of sliding-window inference, and window sizes that fit a memory budget.

Peak RSS during inference is estimated as the sum of

- a baseline: Python, NumPy, the OpenVINO runtime, the preprocessed image (``BASELINE_MB``);
- the network's weights, twice (the IR as read and the compiled model): ``2 × weights file``;
- the network's working memory in OpenVINO: ``ACTIVATION_TENSORS[variant]`` full-resolution feature
  maps of ``init_filters`` float32 channels per window voxel (fewer for INT8, whose activations
  are 8-bit between quantised layers), plus ``LOGIT_COPIES`` copies of the window's output: its
  logits, or, where the class head is split off (:mod:`mhub_cpu.runtime.head`), its feature maps
  and one chunk of logits per stitching thread (:data:`~mhub_cpu.runtime.head.CHUNK_BYTES`);
- the stitching buffer: ``classes × X × Y × window_z`` float32 (see ``SlabStitcher``);
- the model-grid volume, its padded copy and the label map.

The constants are a least-squares fit to the 18 f32 and INT8 runs of ``mhub-cpu bench`` on
2026-11-27 (OpenVINO 2026.4 on a 2-core Xeon; W1, W2, W3 and D: 25 to 118 classes, windows from
(96, 96, 96) to (224, 224, 144)): baseline 215 MiB, 3.97 (f32) and 2.56 (INT8) feature maps, 1.70
logit copies. The largest under-estimate of that fit, 254 MiB (a W1 run with small windows), is
added to the baseline, so that a budget holds for every measured run; large windows are then
over-estimated by up to about 330 MiB.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from mhub_cpu.convert.auto3dseg import ConvertedModel
from mhub_cpu.core.errors import ProcessingError
from mhub_cpu.runtime.head import CHUNK_BYTES, has_class_head
from mhub_cpu.runtime.precision import IrFormat
from mhub_cpu.segment.splitter import WindowPlan, WindowStrategy, make_plan

BASELINE_MB = 470.0
ACTIVATION_TENSORS = {"int8": 2.6, "float": 4.0}
LOGIT_COPIES = 1.7
MIB = 2**20


@dataclass(frozen=True)
class NetworkFootprint:
    """What the memory model needs to know about a converted network.

    Attributes:
        classes: output channels.
        init_filters: feature channels at full resolution.
        weights_mb: size of the IR's weights file (``model.bin``), MiB.
        int8: the IR is INT8-quantised.
    """

    classes: int
    init_filters: int
    weights_mb: float
    int8: bool = False
    head_split: bool = False
    threads: int = 1


def footprint_of(model: ConvertedModel, threads: int | None = None) -> NetworkFootprint:
    """The footprint of a converted network, as the pipeline runs it (class head split off where it can be)."""
    config = model.config
    return NetworkFootprint(
        classes=int(config["output_classes"]), init_filters=int(config.get("init_filters", 32)),
        weights_mb=model.xml_path.with_suffix(".bin").stat().st_size / MIB, int8=model.ir is IrFormat.INT8,
        head_split=has_class_head(model.xml_path), threads=threads or os.cpu_count() or 1,
    )


def estimated_peak_mb(plan: WindowPlan, volume_shape: tuple[int, int, int], network: NetworkFootprint) -> float:
    """Estimated peak RSS (MiB) of inference with ``plan`` on a model-grid volume of ``volume_shape``."""
    wx, wy, wz = plan.window
    window_voxels = wx * wy * wz
    feature_maps = ACTIVATION_TENSORS["int8" if network.int8 else "float"]
    if network.head_split:
        output = window_voxels * LOGIT_COPIES * network.init_filters * 4 + network.threads * CHUNK_BYTES
    else:
        output = window_voxels * LOGIT_COPIES * network.classes * 4
    working = window_voxels * feature_maps * network.init_filters * 4 + output
    px, py, _ = plan.padded_shape
    stitch = network.classes * px * py * wz * 4
    volumes = volume_shape[0] * volume_shape[1] * volume_shape[2] * (4 + 4 + 1)
    return BASELINE_MB + 2 * network.weights_mb + (working + stitch + volumes) / MIB


def plan_within_memory(
    volume_shape: tuple[int, int, int], roi: tuple[int, int, int], strategy: WindowStrategy, overlap: float, divisor: int,
    network: NetworkFootprint, max_memory_mb: float | None,
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
    if max_memory_mb is None or estimated_peak_mb(full, volume_shape, network) <= max_memory_mb:
        return full
    best: tuple[tuple[int, int], WindowPlan] | None = None
    sides = [range(2 * divisor, max(side, 2 * divisor) + 1, divisor) for side in roi]
    for wx, wy, wz in itertools.product(*sides):
        plan = make_plan(volume_shape, (wx, wy, wz), strategy, overlap, divisor)
        if estimated_peak_mb(plan, volume_shape, network) > max_memory_mb:
            continue
        voxels = plan.window[0] * plan.window[1] * plan.window[2]
        key = (plan.count * voxels, -voxels)
        if best is None or key < best[0]:
            best = (key, plan)
    if best is None:
        smallest = make_plan(volume_shape, (2 * divisor,) * 3, strategy, overlap, divisor)
        needed = estimated_peak_mb(smallest, volume_shape, network)
        raise ProcessingError(f"--max-memory {max_memory_mb:.0f} MiB is too small: the smallest window needs about {needed:.0f} MiB")
    return best[1]
