"""DICOM series discovery, grouping and selection of the CT series to process."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid

from ..errors import InputError
from ..progress import log

#: Image Storage SOP classes accepted as CT input (PS3.4 B.5): CT Image Storage, Enhanced CT.
CT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"}
#: SOP class of CT Image Storage, used where a file declares none.
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Tolerance (mm) for positions and spacings compared across slices.
POSITION_TOLERANCE_MM = 0.05


def _is_dicom_file(path: Path) -> bool:
    """True if the file carries the Part 10 'DICM' preamble marker (PS3.10 7.1)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _uid(value: object) -> str:
    return str(value).strip() if value is not None else ""


@dataclass
class DicomSeries:
    """One image series: its files and headers (no pixel data), in slice order once sorted.

    Attributes:
        series_instance_uid: Series Instance UID (0020,000E), generated if the source left it blank.
        study_instance_uid: Study Instance UID (0020,000D), generated if the source left it blank.
        instances: Headers of the instances, sorted by position along the slice normal (ascending).
        files: The instance files, same order as ``instances``.
        generated_uids: Names of UID attributes that were blank in the source and were replaced,
            e.g. ``["StudyInstanceUID", "SeriesInstanceUID"]``; such references point to no real
            object and every output says so.
        sop_uids_from_file_meta: SOP Class/Instance UIDs were blank in the datasets and were taken
            from the Part 10 file meta information (0002,0002)/(0002,0003).
    """

    series_instance_uid: str
    study_instance_uid: str
    modality: str
    description: str
    instances: list[Dataset] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    generated_uids: list[str] = field(default_factory=list)
    sop_uids_from_file_meta: bool = False

    @property
    def is_ct(self) -> bool:
        return self.modality == "CT"

    def summary(self) -> str:
        return (
            f"{self.series_instance_uid} ({self.modality}, {len(self.files)} files"
            + (f", '{self.description}'" if self.description else "")
            + ")"
        )


def scan_directory(root: Path) -> tuple[list[DicomSeries], int]:
    """Read the headers of every DICOM file below ``root`` and group them into series.

    Files without the Part 10 marker are skipped (counted). A file that has the marker but cannot
    be parsed is an error: a broken file silently left out would make a gap in the volume.

    Returns:
        The series found (unsorted) and the number of non-DICOM files skipped.
    """
    groups: dict[tuple, DicomSeries] = {}
    skipped = 0
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    for path in paths:
        if not _is_dicom_file(path):
            skipped += 1
            continue
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
            raise InputError(f"broken DICOM file {path}: {exc}") from exc
        key = _series_key(dataset, path)
        if key not in groups:
            groups[key] = DicomSeries(
                series_instance_uid=_uid(dataset.get("SeriesInstanceUID")),
                study_instance_uid=_uid(dataset.get("StudyInstanceUID")),
                modality=str(dataset.get("Modality", "")).upper(),
                description=str(dataset.get("SeriesDescription", "")),
            )
        groups[key].instances.append(dataset)
        groups[key].files.append(path)
    return list(groups.values()), skipped


def _series_key(dataset: Dataset, path: Path) -> tuple:
    """Grouping key: the Series Instance UID, or for blank UIDs the folder and series attributes."""
    uid = _uid(dataset.get("SeriesInstanceUID"))
    if uid:
        return ("uid", uid)
    orientation = tuple(round(float(v), 3) for v in dataset.get("ImageOrientationPatient", []) or [])
    return (
        "no-uid",
        str(path.parent),
        str(dataset.get("SeriesNumber", "")),
        str(dataset.get("Modality", "")),
        str(dataset.get("FrameOfReferenceUID", "")),
        orientation,
        int(dataset.get("Rows", 0) or 0),
        int(dataset.get("Columns", 0) or 0),
    )


def select_series(series: list[DicomSeries], series_uid: str | None, root: Path) -> DicomSeries:
    """Pick the CT series to process: the one named by ``series_uid``, else the only CT series.

    Localizer (scout) series, whose Image Type (0008,0008) contains LOCALIZER, are never chosen
    automatically.

    Raises:
        InputError: no DICOM, the named series is absent or not CT, no CT series, or several CT
            series and no ``series_uid`` to choose.
    """
    if not series:
        raise InputError(f"no DICOM image files found in {root}")
    if series_uid is not None:
        matches = [s for s in series if s.series_instance_uid == series_uid]
        if not matches:
            listing = "\n  ".join(s.summary() for s in series)
            raise InputError(f"series {series_uid} not found in {root}; series present:\n  {listing}")
        chosen = matches[0]
        if not chosen.is_ct:
            raise InputError(
                f"series {series_uid} has modality {chosen.modality or 'unknown'}, not CT; "
                "these models are trained on CT only"
            )
        return chosen
    candidates = [s for s in series if s.is_ct and not _is_localizer(s)]
    if not candidates:
        found = ", ".join(sorted({s.modality or "unknown" for s in series}))
        raise InputError(
            f"no CT series in {root} (found modality {found}); these models are trained on CT only"
        )
    if len(candidates) > 1:
        listing = "\n  ".join(s.summary() for s in candidates)
        raise InputError(
            f"{len(candidates)} CT series in {root}; choose one with --series UID:\n  {listing}"
        )
    return candidates[0]


def _is_localizer(series: DicomSeries) -> bool:
    image_type = series.instances[0].get("ImageType", []) or []
    return "LOCALIZER" in [str(v).upper() for v in image_type]


def slice_normal(dataset: Dataset) -> np.ndarray:
    """Unit normal of the image plane: row direction × column direction (PS3.3 C.7.6.2.1.1)."""
    try:
        orientation = np.asarray([float(v) for v in dataset.ImageOrientationPatient], dtype=float)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError("Image Orientation (Patient) (0020,0037) is missing or invalid") from exc
    if orientation.shape != (6,):
        raise InputError(f"Image Orientation (Patient) has {orientation.size} values, expected 6")
    normal = np.cross(orientation[:3], orientation[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-3:
        raise InputError("Image Orientation (Patient) row and column directions are parallel")
    return normal / norm


def sort_and_validate(series: DicomSeries) -> None:
    """Sort instances by position along the slice normal and check the series forms one volume.

    Checks: a single image orientation, one size and pixel spacing, one image per position,
    uniform slice spacing (a missing slice is a gap and is refused), and at least two slices.

    Raises:
        InputError: with the first inconsistency found.
    """
    instances = series.instances
    if len(instances) < 2:
        raise InputError(f"series {series.series_instance_uid} has {len(instances)} image; a volume needs at least 2")
    first = instances[0]
    normal = slice_normal(first)
    for attribute in ("Rows", "Columns", "PixelSpacing", "ImagePositionPatient"):
        missing = [f for f, ds in zip(series.files, instances) if attribute not in ds]
        if missing:
            raise InputError(f"{attribute} missing in {missing[0]}")
    for path, dataset in zip(series.files, instances):
        if np.abs(slice_normal(dataset) - normal).max() > 1e-3:
            raise InputError(f"{path} has a different image orientation than the rest of the series")
        if (dataset.Rows, dataset.Columns) != (first.Rows, first.Columns):
            raise InputError(f"{path} is {dataset.Rows}x{dataset.Columns}, the series is {first.Rows}x{first.Columns}")
        if np.abs(np.subtract([float(v) for v in dataset.PixelSpacing], [float(v) for v in first.PixelSpacing])).max() > 1e-4:
            raise InputError(f"{path} has a different pixel spacing than the rest of the series")

    positions = np.array([np.dot(normal, [float(v) for v in ds.ImagePositionPatient]) for ds in instances])
    order = np.argsort(positions, kind="stable")
    series.instances = [instances[i] for i in order]
    series.files = [series.files[i] for i in order]
    positions = positions[order]
    steps = np.diff(positions)
    if np.any(steps < POSITION_TOLERANCE_MM):
        index = int(np.argmin(steps))
        raise InputError(
            f"two images at the same position ({positions[index]:.2f} mm along the normal): "
            f"{series.files[index]} and {series.files[index + 1]}; the series holds more than one volume"
        )
    spacing = float(np.median(steps))
    if np.abs(steps - spacing).max() > max(POSITION_TOLERANCE_MM, 0.01 * spacing):
        index = int(np.argmax(np.abs(steps - spacing)))
        raise InputError(
            f"non-uniform slice spacing: {steps[index]:.3f} mm between {series.files[index].name} and "
            f"{series.files[index + 1].name}, {spacing:.3f} mm elsewhere (missing slice?)"
        )


def resolve_uids(series: DicomSeries) -> None:
    """Fill blank UIDs so that the series can be referenced, and record every replacement.

    SOP Class and SOP Instance UIDs blank in a dataset are taken from its file meta information
    (which Part 10 requires to be present). Blank Study and Series Instance UIDs are generated
    deterministically from the instance UIDs (so repeated runs agree) and listed in
    :attr:`DicomSeries.generated_uids`.
    """
    for dataset in series.instances:
        meta = getattr(dataset, "file_meta", None)
        if not _uid(dataset.get("SOPInstanceUID")):
            meta_uid = _uid(meta.get("MediaStorageSOPInstanceUID")) if meta is not None else ""
            if not meta_uid:
                raise InputError("an instance has neither SOP Instance UID nor Media Storage SOP Instance UID")
            dataset.SOPInstanceUID = meta_uid
            series.sop_uids_from_file_meta = True
        if not _uid(dataset.get("SOPClassUID")):
            meta_class = _uid(meta.get("MediaStorageSOPClassUID")) if meta is not None else ""
            dataset.SOPClassUID = meta_class or CT_IMAGE_STORAGE
            series.sop_uids_from_file_meta = True
    entropy = "\n".join(str(ds.SOPInstanceUID) for ds in series.instances)
    if not series.study_instance_uid:
        series.study_instance_uid = _derived_uid(entropy, "study")
        series.generated_uids.append("StudyInstanceUID")
    if not series.series_instance_uid:
        series.series_instance_uid = _derived_uid(entropy, "series")
        series.generated_uids.append("SeriesInstanceUID")
    for dataset in series.instances:
        dataset.StudyInstanceUID = series.study_instance_uid
        dataset.SeriesInstanceUID = series.series_instance_uid
    if series.generated_uids:
        log(
            "warning: blank " + " and ".join(series.generated_uids)
            + " in the source; generated replacements (outputs reference UIDs that exist nowhere else)"
        )


def _derived_uid(entropy: str, purpose: str) -> str:
    """A UID derived from the instance UIDs, so that repeated runs generate the same one."""
    return generate_uid(entropy_srcs=[hashlib.sha256(f"{purpose}\n{entropy}".encode()).hexdigest()])


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
