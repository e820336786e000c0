"""Preprocessing and its inverse, following the Slicer MONAIAuto3DSeg inference script.

For single-input CT models the Slicer script (``auto3dseg_segresnet_inference.py``) applies, with
MONAI transforms: intensity normalisation on the loaded grid; reorientation to RAS
(``orientation_ras``); a crop to the bounding box of voxels > 0 in the *raw* image plus a margin
of 10 voxels (``crop_foreground``); resampling with trilinear interpolation to
``resample_resolution``, leaving an axis alone whose spacing is within 0.75–1.25 × the target.
After inference the label map is resampled back with nearest neighbour and un-cropped.

Here the same steps run in NumPy on axis-aligned grids, where MONAI's resampling reduces to
separable per-axis interpolation: output voxel ``i`` samples input index ``i · target / spacing``
(MONAI ``Spacing`` puts the output origin on input voxel 0 and uses ``round((n − 1) · spacing /
target + 1)`` voxels, with border padding). With ``orientation_ras`` we reorient to RAS *before*
computing the crop box; the Slicer script computes it on the un-reoriented raw image, which is
the same box up to the axis permutation.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

from mhub_cpu.core.errors import InputError, ModelError

#: Margin (voxels) around the foreground box, as in the Slicer script.
CROP_MARGIN = 10
#: MONAI Spacingd min/max pixdim factors used by the Slicer script.
KEEP_SPACING_RANGE = (0.75, 1.25)
#: Normalisations that act voxel by voxel (no image statistics).
POINTWISE_MODES = ("none", "range", "ct")


@dataclass(frozen=True)
class PreparedVolume:
    """The network-ready volume and what is needed to map labels back to the input grid."""

    image: np.ndarray  # float32 (x, y, z) at model resolution
    input_shape: tuple[int, int, int]  # canonical (RAS) input grid
    crop_box: tuple[slice, slice, slice]  # in the canonical input grid
    input_spacing: tuple[float, float, float]
    model_spacing: tuple[float, float, float]


def to_canonical(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """The image with axes permuted/flipped to RAS+ order (MONAI ``Orientation("RAS")``)."""
    return nib.as_closest_canonical(image)


def model_orientation(image: nib.Nifti1Image, config: dict) -> nib.Nifti1Image:
    """The image in the voxel order the model was trained on: RAS+ when ``orientation_ras`` (as the
    Slicer script's ``Orientationd("RAS")``), else the stored order, as loaded."""
    return to_canonical(image) if config.get("orientation_ras", False) else image


def normalize_intensity(raw: np.ndarray, mode: str, bounds: list[float] | None) -> np.ndarray:
    """Auto3DSeg intensity normalisation, as in the Slicer script, to float32.

    ``ct``/``range``: sigmoid of the linear map of ``bounds`` to [−1, 1] (no clipping);
    ``meanstd``/``mri``: zero mean, unit variance over non-zero voxels; ``meanstdtanh``: that,
    then ``3·tanh(x/3)``; ``pet``: ``sigmoid((x − min)/std)``; ``none``: unchanged.
    """
    x = raw.astype(np.float32, copy=True)
    if mode == "none":
        return x
    if mode in ("range", "ct"):
        if not bounds or len(bounds) != 2 or bounds[1] == bounds[0]:
            raise ModelError(f"normalize_mode {mode} needs two distinct intensity_bounds, got {bounds}")
        low, high = float(bounds[0]), float(bounds[1])
        x -= low
        x *= 2.0 / (high - low)
        x -= 1.0
        return _sigmoid_inplace(x)
    if mode in ("meanstd", "mri", "meanstdtanh"):
        nonzero = x != 0
        if nonzero.any():
            values = x[nonzero]
            mean, std = float(values.mean()), float(values.std())
            x[nonzero] = (values - mean) / (std if std > 0 else 1.0)
        if mode == "meanstdtanh":
            x = 3.0 * np.tanh(x / 3.0)
        return x.astype(np.float32, copy=False)
    if mode == "pet":
        return _sigmoid_inplace((x - x.min()) / x.std())
    raise ModelError(f"unsupported normalize_mode {mode!r}")


def _sigmoid_inplace(x: np.ndarray) -> np.ndarray:
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1.0
    np.reciprocal(x, out=x)
    return x


def foreground_box(raw: np.ndarray, margin: int = CROP_MARGIN) -> tuple[slice, slice, slice]:
    """Bounding box of voxels > 0 (MONAI ``CropForeground`` default), grown by ``margin`` and clipped."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(np.any(raw > 0, axis=other))
        if present.size == 0:
            raise InputError("no voxel above 0 HU: the volume holds no body (is this CT?)")
        start = max(int(present[0]) - margin, 0)
        stop = min(int(present[-1]) + 1 + margin, raw.shape[axis])
        box.append(slice(start, stop))
    return tuple(box)  # type: ignore[return-value]


def target_spacing(spacing: tuple[float, ...], resolution: list[float] | None) -> tuple[float, float, float]:
    """Per-axis output spacing: the model resolution unless the input is within 0.75–1.25× of it."""
    if resolution is None:
        return tuple(float(s) for s in spacing)  # type: ignore[return-value]
    out = []
    for current, target in zip(spacing, resolution):
        low, high = target * KEEP_SPACING_RANGE[0], target * KEEP_SPACING_RANGE[1]
        out.append(float(current) if low - 1e-3 <= current <= high + 1e-3 else float(target))
    return tuple(out)  # type: ignore[return-value]


def resampled_length(length: int, spacing: float, target: float) -> int:
    """Number of output voxels along an axis (MONAI ``compute_shape_offset``, scale_extent=False)."""
    return int(np.round((length - 1) * spacing / target + 1.0))


def resample_linear(volume: np.ndarray, spacing: tuple[float, ...], target: tuple[float, ...]) -> np.ndarray:
    """Separable trilinear resampling of a float32 volume to ``target`` spacing (border padding)."""
    out = volume
    for axis, (current, wanted) in enumerate(zip(spacing, target)):
        if abs(current - wanted) < 1e-6:
            continue
        length = out.shape[axis]
        positions = np.arange(resampled_length(length, current, wanted)) * (wanted / current)
        positions = np.clip(positions, 0, length - 1)
        lower = np.floor(positions).astype(np.int64)
        upper = np.minimum(lower + 1, length - 1)
        weight_shape = [1, 1, 1]
        weight_shape[axis] = -1
        weight = (positions - lower).astype(np.float32).reshape(weight_shape)
        low_values = np.take(out, lower, axis=axis)
        high_values = np.take(out, upper, axis=axis)
        high_values -= low_values
        high_values *= weight
        low_values += high_values
        out = low_values
    return np.ascontiguousarray(out, dtype=np.float32)


def nearest_indices(length: int, spacing: float, model_spacing: float, model_length: int) -> np.ndarray:
    """For each input voxel along an axis, the nearest model-grid voxel (inverse resampling)."""
    positions = np.arange(length) * (spacing / model_spacing)
    return np.clip(np.rint(positions), 0, model_length - 1).astype(np.int64)


def prepare(image: nib.Nifti1Image, config: dict) -> PreparedVolume:
    """Normalise, crop and resample a canonical (RAS) CT image for the network."""
    if len(image.shape) != 3:
        raise InputError(f"expected a 3D volume, got shape {image.shape}")
    raw = np.asarray(image.dataobj, dtype=np.float32)
    spacing = tuple(float(v) for v in image.header.get_zooms()[:3])
    box = foreground_box(raw) if config.get("crop_foreground", True) else tuple(slice(0, n) for n in raw.shape)
    mode, bounds = config["normalize_mode"], config.get("intensity_bounds")
    if mode in POINTWISE_MODES:  # same result either way; cropping first saves memory
        cropped = normalize_intensity(raw[box], mode, bounds)
    else:  # statistics over the whole image, as in the Slicer script
        cropped = normalize_intensity(raw, mode, bounds)[box]
    del raw
    model_spacing = target_spacing(spacing, config.get("resample_resolution"))
    resampled = resample_linear(cropped, spacing, model_spacing)
    return PreparedVolume(
        image=resampled, input_shape=tuple(image.shape), crop_box=box,  # type: ignore[arg-type]
        input_spacing=spacing, model_spacing=model_spacing,  # type: ignore[arg-type]
    )


def restore_labels(labels: np.ndarray, prepared: PreparedVolume) -> np.ndarray:
    """Map a model-resolution label map back to the canonical input grid (nearest, then un-crop)."""
    crop_shape = [s.stop - s.start for s in prepared.crop_box]
    index = [
        nearest_indices(crop_shape[axis], prepared.input_spacing[axis], prepared.model_spacing[axis], labels.shape[axis])
        for axis in range(3)
    ]
    full = np.zeros(prepared.input_shape, dtype=labels.dtype)
    full[prepared.crop_box] = labels[np.ix_(*index)]
    return full
