"""Segmentation of a CT volume with a converted Auto3DSeg model: preprocess, sliding window, restore."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from mhub_cpu.convert.auto3dseg import ConvertedModel, check_supported
from mhub_cpu.core.errors import ModelError
from mhub_cpu.core.progress import StageTimer, log
from mhub_cpu.runtime.network import Network
from mhub_cpu.runtime.precision import Precision, RunPrecision
from mhub_cpu.segment.inferer import sliding_window_labels
from mhub_cpu.segment.memory import estimated_peak_mb, footprint_of, plan_within_memory
from mhub_cpu.segment.preprocess import model_orientation, normalize_intensity, prepare, restore_labels
from mhub_cpu.segment.splitter import WindowStrategy, make_plan
from mhub_cpu.segment.weights import BlendMode


@dataclass(frozen=True)
class InferenceSettings:
    """How to run the sliding window (defaults follow the Slicer script)."""

    precision: Precision = Precision.F32
    #: ``--precision auto``: ``precision`` is a placeholder until :func:`mhub_cpu.segment.job.resolve_precision`
    #: chose it for this CPU and model and said why in ``precision_reason``.
    precision_auto: bool = False
    precision_reason: str = ""
    overlap: float = 0.625
    blend: BlendMode = BlendMode.GAUSSIAN
    threads: int | None = None
    strategy: WindowStrategy = WindowStrategy.DENSE
    skip_air: bool = False
    max_memory_mb: float | None = None


@dataclass
class SegmentationResult:
    """A label map on the input image's own grid, and facts about the run."""

    labels: nib.Nifti1Image
    windows: int
    window: tuple[int, int, int]
    model_grid_shape: tuple[int, int, int]
    model_spacing: tuple[float, float, float]
    ran: RunPrecision
    #: The class head ran while stitching, in chunks (``False``: inside OpenVINO, logits whole).
    head_split: bool = False


def check_settings(config: dict, settings: InferenceSettings) -> None:
    """Refuse a model or settings this pipeline cannot run, before any work on the image."""
    if settings.precision_auto and not settings.precision_reason:
        raise RuntimeError("--precision auto was not resolved before the run (resolve_precision)")  # a bug, not an input
    check_supported(config)
    if not 0 <= settings.overlap < 1:
        raise ModelError(f"overlap must be in [0, 1), got {settings.overlap}")
    if settings.skip_air:
        air_window_test(config)


def segment_image(
    image: nib.Nifti1Image, model: ConvertedModel, settings: InferenceSettings, timer: StageTimer
) -> SegmentationResult:
    """Run preprocessing, sliding-window inference and inverse resampling on ``image``."""
    config = model.config
    check_settings(config, settings)
    roi: tuple[int, int, int] = tuple(int(v) for v in config["roi_size"])  # type: ignore[assignment]
    with timer.stage("preprocess"):
        oriented = model_orientation(image, config)
        prepared = prepare(oriented, config)
        log(
            f"model grid {prepared.image.shape} at {tuple(round(s, 3) for s in prepared.model_spacing)} mm, "
            f"window {roi}, overlap {settings.overlap}, {settings.precision}"
        )
    classes = int(config["output_classes"])
    footprint = footprint_of(model, settings.threads)
    divisor = int(config.get("size_divisor", 16))
    plan = plan_within_memory(
        prepared.image.shape, roi, settings.strategy, settings.overlap, divisor, footprint, settings.max_memory_mb
    )
    estimate = estimated_peak_mb(plan, prepared.image.shape, footprint)
    log(f"{settings.strategy} windows: {plan.count} of {plan.window}, estimated peak {estimate:.0f} MiB")
    if plan.window != make_plan(prepared.image.shape, roi, settings.strategy, settings.overlap, divisor).window:
        log(f"warning: windows shrunk to {plan.window} to fit --max-memory {settings.max_memory_mb:.0f} MiB; "
            "with less context per window the labels differ from the model's own window size")
    with timer.stage("load network"):
        network = Network(model.xml_path, settings.precision, settings.threads, (1, 1, *plan.window), split_head=True)
        log(f"network runs {network.ran.summary()}; " + (
            f"class head ({network.head.features} features → {classes} classes) applied while stitching, in chunks"
            if network.head is not None else "class head inside OpenVINO (no 1×1×1 head to split off)"))
    with timer.stage("inference"):
        skip = air_window_test(config) if settings.skip_air else None
        labels, windows = sliding_window_labels(
            prepared.image, lambda window: network(window[None, None])[0], plan, classes, settings.blend, skip,
            settings.threads, network.head,
        )
    with timer.stage("restore grid"):
        labels_image = _to_input_orientation(restore_labels(labels, prepared), oriented, image)
    return SegmentationResult(
        labels=labels_image, windows=windows, window=plan.window, model_grid_shape=prepared.image.shape,
        model_spacing=prepared.model_spacing, ran=network.ran, head_split=network.head is not None,
    )


#: A window is air when no voxel in it exceeds this density (HU); lung parenchyma is about −850.
AIR_HU = -950.0


def air_window_test(config: dict) -> Callable[[np.ndarray], bool]:
    """Predicate "this preprocessed window holds only air" (at or below :data:`AIR_HU`) for HU-based
    normalisations.

    Raises:
        ModelError: for normalisations where HU cannot be recovered from the network input.
    """
    if config["normalize_mode"] not in ("range", "ct"):
        raise ModelError(
            f"--skip-air needs a model with 'range' or 'ct' intensity normalisation (HU from the network input); "
            f"this model's is {config['normalize_mode']!r}"
        )
    threshold = float(normalize_intensity(np.array([AIR_HU], dtype=np.float32), config["normalize_mode"], config["intensity_bounds"])[0])
    return lambda window: float(window.max()) <= threshold


def _to_input_orientation(labels: np.ndarray, oriented: nib.Nifti1Image, original: nib.Nifti1Image) -> nib.Nifti1Image:
    """Label image on the original image's grid (undoing a reorientation to RAS, if any)."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(oriented.affine), nib.orientations.io_orientation(original.affine)
    )
    data = nib.orientations.apply_orientation(labels, transform)
    out = nib.Nifti1Image(np.ascontiguousarray(data), original.affine)
    out.set_data_dtype(labels.dtype)
    out.header.set_xyzt_units("mm", "sec")
    return out
