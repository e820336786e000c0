"""Finding DICOM files below a folder and grouping them into series (headers only, no pixel data)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from mhub_cpu.core.errors import InputError
from mhub_cpu.dicomio.series import CT_SOP_CLASSES, DicomSeries, uid_text
from mhub_cpu.dicomio.uids import derived_uid, instance_entropy


class MalformedElement(ValueError):
    """An element of a header that pydicom cannot decode (a wrong length for its VR, a bad value)."""


def parse_every_element(dataset: Dataset) -> None:
    """Decode every element of a header now, where the file is named, rather than at first use.

    pydicom decodes element values lazily, so a malformed length (e.g. 3 bytes for a US value)
    would otherwise surface as pydicom's own exception deep in the pipeline. Sequences are
    decoded item by item.

    Raises:
        MalformedElement: naming the tag and keyword of the first element that fails.
    """
    for tag in list(dataset.keys()):
        try:
            element = dataset[tag]
            items = element.value if element.VR == "SQ" else ()
        except Exception as exc:  # pydicom raises several types for malformed values
            keyword = pydicom.datadict.keyword_for_tag(tag) or "private element"
            raise MalformedElement(f"element {pydicom.tag.Tag(tag)} ({keyword}) cannot be decoded: {str(exc).split('. ')[0]}") from exc
        for item in items:
            parse_every_element(item)

def _is_dicom_file(path: Path) -> bool:
    """True if the file carries the Part 10 'DICM' preamble marker (PS3.10 7.1)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


#: The attributes :func:`scan_files` needs to group files into series and describe them; reading only
#: these (``tags=SCAN_TAGS``) keeps a whole collection's headers small in memory.
SCAN_TAGS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Modality",
    "ImageType", "SeriesNumber", "SeriesDescription", "BodyPartExamined", "ImageOrientationPatient", "Rows", "Columns",
)


def scan_directory(root: Path) -> tuple[list[DicomSeries], int]:
    """Read the headers of every DICOM file below ``root`` and group them into series.

    Files without the Part 10 marker are skipped (counted). A file that has the marker but cannot
    be parsed is an error: a broken file silently left out would make a gap in the volume.

    Returns:
        The series found (unsorted) and the number of non-DICOM files skipped.
    """
    return scan_files(p for p in root.rglob("*") if p.is_file())


def scan_files(
    paths: Iterable[Path], unreadable: list[tuple[Path, str]] | None = None, tags: Iterable[str] | None = None,
) -> tuple[list[DicomSeries], int]:
    """Group the DICOM files among ``paths`` into series, as :func:`scan_directory` does for a folder.

    Args:
        paths: The files to read (a batch worker reads exactly the files of its series).
        unreadable: Where given, files with the marker that cannot be parsed are listed here as
            ``(path, cause)`` and left out, instead of being refused (a collection scan goes on).
        tags: Read only these attributes (and the file meta); default: the whole header.
    """
    groups: dict[tuple, DicomSeries] = {}
    skipped = 0
    specific = list(tags) if tags is not None else None
    for path in sorted(paths):
        if not _is_dicom_file(path):
            skipped += 1
            continue
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=specific)
            parse_every_element(dataset)
        except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, MalformedElement) as exc:
            if unreadable is None:
                raise InputError(f"broken DICOM file {path}: {exc}") from exc
            unreadable.append((path, f"{type(exc).__name__}: {exc}"))
            continue
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
