"""Segmentation of a CT NIfTI volume with a converted Auto3DSeg model."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

from ..conversion import ConvertedModel
from ..errors import ModelError
from ..progress import StageTimer, log
from .preprocess import normalize_intensity, prepare, restore_labels, to_canonical
from .precision import RunPrecision
from .runtime import OpenVinoNetwork
from .memory import MIB, NetworkFootprint, estimated_peak_mb, plan_within_memory
from .sliding_window import make_plan, sliding_window_labels


@dataclass(frozen=True)
class InferenceSettings:
    """How to run the sliding window (defaults follow the Slicer script)."""

    overlap: float = 0.625
    blend: str = "gaussian"
    compute: str = "f32"  # INFERENCE_PRECISION_HINT
    threads: int | None = None
    strategy: str = "dense"
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


def segment_image(
    image: nib.Nifti1Image, model: ConvertedModel, settings: InferenceSettings, timer: StageTimer
) -> SegmentationResult:
    """Run preprocessing, sliding-window inference and inverse resampling on ``image``."""
    config = model.config
    if config.get("input_channels", 1) != 1:
        raise ModelError("only single-input models are supported")
    if config.get("sigmoid"):
        raise ModelError("sigmoid (multi-label) models are not supported yet")
    if not 0 <= settings.overlap < 1:
        raise ModelError(f"overlap must be in [0, 1), got {settings.overlap}")
    roi: tuple[int, int, int] = tuple(int(v) for v in config["roi_size"])  # type: ignore[assignment]
    with timer.stage("preprocess"):
        canonical = to_canonical(image)
        prepared = prepare(canonical, config)
        log(
            f"model grid {prepared.image.shape} at {tuple(round(s, 3) for s in prepared.model_spacing)} mm, "
            f"window {roi}, overlap {settings.overlap}, {settings.compute}"
        )
    classes = int(config["output_classes"])
    footprint = NetworkFootprint(
        classes=classes, init_filters=int(config.get("init_filters", 32)),
        weights_mb=model.xml_path.with_suffix(".bin").stat().st_size / MIB, int8=model.ir_variant == "int8",
    )
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
        network = OpenVinoNetwork(
            model.xml_path, settings.compute, settings.threads, plan.window, int8=model.ir_variant == "int8"
        )
        log(f"network runs {network.ran.summary()}")
    with timer.stage("inference"):
        skip = air_window_test(config) if settings.skip_air else None
        labels, windows = sliding_window_labels(
            prepared.image, network, plan, classes, settings.blend, skip, settings.threads
        )
    with timer.stage("restore grid"):
        canonical_labels = restore_labels(labels, prepared)
        labels_image = _to_input_orientation(canonical_labels, canonical, image)
    return SegmentationResult(
        labels=labels_image, windows=windows, window=plan.window, model_grid_shape=tuple(prepared.image.shape),  # type: ignore[arg-type]
        model_spacing=prepared.model_spacing, ran=network.ran,
    )


#: A window is air when no voxel in it exceeds this density (HU); lung parenchyma is about −850.
AIR_HU = -950.0


def air_window_test(config: dict):
    """Predicate "this preprocessed window holds only air" for HU-based normalisations.

    Raises:
        ModelError: for normalisations where HU cannot be recovered from the network input.
    """
    if config["normalize_mode"] not in ("range", "ct"):
        raise ModelError("skipping air windows needs a 'range'/'ct' normalised model")
    threshold = float(normalize_intensity(np.array([AIR_HU], dtype=np.float32), config["normalize_mode"], config["intensity_bounds"])[0])
    return lambda window: float(window.max()) <= threshold


def _to_input_orientation(labels: np.ndarray, canonical: nib.Nifti1Image, original: nib.Nifti1Image) -> nib.Nifti1Image:
    """Label image on the original image's grid (undoing the RAS reorientation)."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(canonical.affine), nib.orientations.io_orientation(original.affine)
    )
    data = nib.orientations.apply_orientation(labels, transform)
    out = nib.Nifti1Image(np.ascontiguousarray(data), original.affine)
    out.set_data_dtype(labels.dtype)
    out.header.set_xyzt_units("mm", "sec")
    return out
