"""Finding DICOM files below a folder and grouping them into series (headers only, no pixel data)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from mhub_cpu.core.errors import InputError
from mhub_cpu.dicomio.series import CT_SOP_CLASSES, DicomSeries, uid_text
from mhub_cpu.dicomio.uids import derived_uid, instance_entropy


def _is_dicom_file(path: Path) -> bool:
    """True if the file carries the Part 10 'DICM' preamble marker (PS3.10 7.1)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


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
            modality = str(dataset.get("Modality", "") or "").strip().upper()
            groups[key] = DicomSeries(
                series_instance_uid=uid_text(dataset.get("SeriesInstanceUID")),
                study_instance_uid=uid_text(dataset.get("StudyInstanceUID")),
                modality=modality or _modality_of_sop_class(dataset),
                description=str(dataset.get("SeriesDescription", "") or ""),
                localizer=_is_localizer(dataset),
            )
        groups[key].instances.append(dataset)
        groups[key].files.append(path)
    found = list(groups.values())
    for series in found:
        if series.modality and not str(series.instances[0].get("Modality", "") or "").strip():
            series.repairs.append(f"Modality (0008,0060) blank in the source: {series.modality}, from the SOP Class UID")
            for instance in series.instances:
                instance.Modality = series.modality
        if not series.series_instance_uid:  # selectable (--series) by the UID every output will carry
            series.series_instance_uid = derived_uid(instance_entropy(series), "series")
            series.generated_uids.append("SeriesInstanceUID")
    return found, skipped


def _modality_of_sop_class(dataset: Dataset) -> str:
    """``CT`` for a blank Modality whose SOP class (dataset or file meta) is CT image storage."""
    meta = getattr(dataset, "file_meta", None)
    classes = {uid_text(dataset.get("SOPClassUID")), uid_text(meta.get("MediaStorageSOPClassUID")) if meta is not None else ""}
    return "CT" if classes & CT_SOP_CLASSES else ""


def _series_key(dataset: Dataset, path: Path) -> tuple:
    """Grouping key: the Series Instance UID, or for blank UIDs the folder and series attributes.

    Localizer (scout) images form a group of their own even when a scanner stores them in the
    series of the volume, so that they never become a slice of it.
    """
    uid = uid_text(dataset.get("SeriesInstanceUID"))
    localizer = _is_localizer(dataset)
    if uid:
        return ("uid", uid, localizer)
    try:
        orientation = tuple(round(float(v), 3) for v in dataset.get("ImageOrientationPatient", []) or [])
    except (TypeError, ValueError):
        orientation = ()
    return (
        "no-uid",
        localizer,
        str(path.parent),
        str(dataset.get("SeriesNumber", "")),
        str(dataset.get("Modality", "")),
        str(dataset.get("FrameOfReferenceUID", "")),
        orientation,
        str(dataset.get("Rows", "")),
        str(dataset.get("Columns", "")),
    )


def _is_localizer(dataset: Dataset) -> bool:
    image_type = dataset.get("ImageType", []) or []
    if isinstance(image_type, str):
        image_type = image_type.split("\\")
    return "LOCALIZER" in [str(v).strip().upper() for v in image_type]
