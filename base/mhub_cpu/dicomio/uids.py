"""Blank UIDs of real-world series: taken from the file meta information, or generated reproducibly."""

from __future__ import annotations

import hashlib

from pydicom.uid import generate_uid

from mhub_cpu.core.errors import InputError
from mhub_cpu.core.progress import log
from mhub_cpu.dicomio.series import CT_IMAGE_STORAGE, DicomSeries, uid_text


def resolve_uids(series: DicomSeries) -> None:
    """Fill blank UIDs so that the series can be referenced, and record every replacement.

    SOP Class and SOP Instance UIDs blank in a dataset are taken from its file meta information
    (which Part 10 requires to be present). Blank Study and Series Instance UIDs are generated
    deterministically from the instance UIDs (so repeated runs agree) and listed in
    :attr:`DicomSeries.generated_uids`.
    """
    for path, dataset in zip(series.files, series.instances):
        meta = getattr(dataset, "file_meta", None)
        if not uid_text(dataset.get("SOPInstanceUID")):
            meta_uid = uid_text(meta.get("MediaStorageSOPInstanceUID")) if meta is not None else ""
            if not meta_uid:
                raise InputError(f"{path.name} has neither SOP Instance UID nor Media Storage SOP Instance UID")
            dataset.SOPInstanceUID = meta_uid
            series.sop_uids_from_file_meta = True
        if not uid_text(dataset.get("SOPClassUID")):
            meta_class = uid_text(meta.get("MediaStorageSOPClassUID")) if meta is not None else ""
            dataset.SOPClassUID = meta_class or CT_IMAGE_STORAGE
            series.sop_uids_from_file_meta = True
    if not series.study_instance_uid:
        series.study_instance_uid = generated_study_uid(series)
        series.generated_uids.append("StudyInstanceUID")
    for dataset in series.instances:
        dataset.StudyInstanceUID = series.study_instance_uid
        dataset.SeriesInstanceUID = series.series_instance_uid
    if series.generated_uids:
        log(
            "warning: blank " + " and ".join(series.generated_uids)
            + " in the source; generated replacements (outputs reference UIDs that exist nowhere else)"
        )


def generated_study_uid(series: DicomSeries) -> str:
    """The Study Instance UID given to a series whose source leaves it blank (the same in every run,
    so that a batch can name the series' output folder before a worker reads it)."""
    return derived_uid(instance_entropy(series), "study")


def instance_entropy(series: DicomSeries) -> str:
    """Order-independent identity of a series' instances: their SOP Instance UIDs (or file names)."""
    uids = []
    for path, dataset in zip(series.files, series.instances):
        meta = getattr(dataset, "file_meta", None)
        uid = uid_text(dataset.get("SOPInstanceUID")) or (uid_text(meta.get("MediaStorageSOPInstanceUID")) if meta is not None else "")
        uids.append(uid or path.name)
    return "\n".join(sorted(uids))


def derived_uid(entropy: str, purpose: str) -> str:
    """A UID derived from the instance UIDs, so that repeated runs generate the same one."""
    return generate_uid(entropy_srcs=[hashlib.sha256(f"{purpose}\n{entropy}".encode()).hexdigest()])
