"""Checks that a series forms one CT volume: one copy per instance, one grid, no gaps, no tilt, CT objects."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom

from mhub_cpu.core.errors import InputError
from mhub_cpu.core.progress import log
from mhub_cpu.dicomio.attributes import numbers
from mhub_cpu.dicomio.geometry import slice_normal
from mhub_cpu.dicomio.nifti import input_limit_bytes, limit_source
from mhub_cpu.dicomio.series import CT_SOP_CLASSES, DicomSeries

#: Tolerance (mm) for positions and spacings compared across slices.
POSITION_TOLERANCE_MM = 0.05
#: Slice positions may drift sideways by at most this fraction of a pixel over the whole series
#: before the series counts as gantry-tilted (sheared) rather than stacked along its normal.
TILT_TOLERANCE_PIXELS = 0.5


def drop_duplicate_files(series: DicomSeries) -> None:
    """Keep one file per SOP Instance UID (a copied file is the same image) and record the rest.

    Raises:
        InputError: two files share a SOP Instance UID but lie at different positions.
    """
    seen: dict[str, int] = {}
    keep = []
    for index, (path, dataset) in enumerate(zip(series.files, series.instances)):
        uid = str(dataset.SOPInstanceUID)
        if uid not in seen:
            seen[uid] = index
            keep.append(index)
            continue
        other = series.instances[seen[uid]]
        if dataset.get("ImagePositionPatient") != other.get("ImagePositionPatient"):
            raise InputError(
                f"{path.name} and {series.files[seen[uid]].name} share SOP Instance UID {uid} "
                "but lie at different positions"
            )
        series.ignored.append(f"{path}: a second copy of SOP instance {uid}")
    if len(keep) < len(series.files):
        log(f"warning: ignored {len(series.files) - len(keep)} duplicate file(s) of the same SOP instance")
        series.instances = [series.instances[i] for i in keep]
        series.files = [series.files[i] for i in keep]


def sort_and_validate(series: DicomSeries) -> None:
    """Sort instances by position along the slice normal and check the series forms one volume.

    Checks: a single image orientation, one size and pixel spacing, one image per position,
    slices stacked along their normal (not gantry-tilted), uniform slice spacing (a missing slice
    is a gap and is refused), and at least two slices.

    Raises:
        InputError: with the first inconsistency found.
    """
    instances = series.instances
    if len(instances) < 2:
        raise InputError(f"series {series.series_instance_uid} has {len(instances)} image; a volume needs at least 2")
    for keyword in ("Rows", "Columns"):
        missing = [f for f, ds in zip(series.files, instances) if not isinstance(ds.get(keyword), int) or ds.get(keyword) < 1]
        if missing:
            raise InputError(f"{keyword} is missing or empty in {missing[0].name}")
    first = instances[0]
    normal = slice_normal(first, series.files[0])
    first_spacing = numbers(first, "PixelSpacing", 2, series.files[0])
    for path, dataset in zip(series.files, instances):
        if np.abs(slice_normal(dataset, path) - normal).max() > 1e-3:
            raise InputError(f"{path} has a different image orientation than the rest of the series")
        if (dataset.Rows, dataset.Columns) != (first.Rows, first.Columns):
            raise InputError(f"{path} is {dataset.Rows}x{dataset.Columns}, the series is {first.Rows}x{first.Columns}")
        if np.abs(numbers(dataset, "PixelSpacing", 2, path) - first_spacing).max() > 1e-4:
            raise InputError(f"{path} has a different pixel spacing than the rest of the series")

    for path, dataset in zip(series.files, instances):
        for keyword in ("RescaleIntercept", "RescaleSlope"):
            if keyword in dataset:
                numbers(dataset, keyword, 1, path, "its pixel values cannot be converted to Hounsfield units")
    points = np.array([numbers(ds, "ImagePositionPatient", 3, p) for p, ds in zip(series.files, instances)])
    positions = points @ normal
    order = np.argsort(positions, kind="stable")
    series.instances = [instances[i] for i in order]
    series.files = [series.files[i] for i in order]
    positions, points = positions[order], points[order]
    steps = np.diff(positions)
    if np.any(steps < POSITION_TOLERANCE_MM):
        index = int(np.argmin(steps))
        raise InputError(
            f"two images at the same position ({positions[index]:.2f} mm along the normal): "
            f"{series.files[index].name} and {series.files[index + 1].name}; the series holds more than one volume"
        )
    _check_tilt(series, points, normal, float(first_spacing.min()))
    spacing = float(np.median(steps))
    if np.abs(steps - spacing).max() > max(POSITION_TOLERANCE_MM, 0.01 * spacing):
        index = int(np.argmax(np.abs(steps - spacing)))
        raise InputError(
            f"non-uniform slice spacing: {steps[index]:.3f} mm between {series.files[index].name} and "
            f"{series.files[index + 1].name}, {spacing:.3f} mm elsewhere (missing slice?)"
        )


def _check_tilt(series: DicomSeries, points: np.ndarray, normal: np.ndarray, pixel_mm: float) -> None:
    """Refuse a gantry-tilted series: slice origins drift sideways instead of along the normal."""
    travel = points[-1] - points[0]
    along = float(travel @ normal)
    sideways = float(np.linalg.norm(travel - along * normal))
    if sideways <= TILT_TOLERANCE_PIXELS * pixel_mm:
        return
    angle = float(np.degrees(np.arctan2(sideways, abs(along))))
    header = series.instances[0].get("GantryDetectorTilt")
    stated = f"; Gantry/Detector Tilt (0018,1120) says {float(header):g} degrees" if header not in (None, "") else ""
    raise InputError(
        f"series {series.series_instance_uid} is gantry-tilted by {angle:.1f} degrees{stated}: its slices are "
        "sheared, not stacked along their normal, and a segmentation on them would be misplaced; "
        "resample it to an untilted grid first (dcm2niix writes a tilt-corrected NIfTI, which --input accepts)"
    )


def check_sop_classes(series: DicomSeries) -> None:
    """Refuse a series whose SOP class is not CT image storage (e.g. an MR or secondary capture)."""
    classes = {str(ds.SOPClassUID) for ds in series.instances}
    unknown = classes - CT_SOP_CLASSES
    if unknown:
        names = ", ".join(sorted(pydicom.uid.UID(c).name for c in unknown))
        raise InputError(f"series {series.series_instance_uid} holds {names} objects, not CT images")


def ensure_readable(paths: list[Path]) -> None:
    """Fail early on unreadable files in the chosen series (e.g. permission denied)."""
    for path in paths:
        if not os.access(path, os.R_OK):
            raise InputError(f"cannot read {path}")


def check_declared_size(series: DicomSeries, max_memory_mb: float | None = None) -> None:
    """Refuse a series whose headers declare a volume larger than an input may hold, before any
    pixel is read or converted: Rows × Columns × slices × Bits Allocated / 8 (one sample per pixel,
    as CT has), against :func:`~mhub_cpu.dicomio.nifti.input_limit_bytes`.

    Raises:
        InputError: the size claimed and the limit, in one line.
    """
    first = series.instances[0]
    bits = first.get("BitsAllocated")
    bits = bits if isinstance(bits, int) and bits > 0 else 16
    declared = int(first.Rows) * int(first.Columns) * len(series.instances) * (-(-bits // 8))
    limit = input_limit_bytes(max_memory_mb)
    if declared > limit:
        raise InputError(
            f"series {series.series_instance_uid}: its headers declare {len(series.instances)} slices of "
            f"{first.Rows}x{first.Columns} at {bits} bits ({declared / (1 << 20):.0f} MiB), more than the "
            f"{limit / (1 << 20):.0f} MiB an input may hold ({limit_source(max_memory_mb)})"
        )
