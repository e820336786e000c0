"""Reading CT input: a folder of DICOM files (any nesting, other files ignored) or a NIfTI file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib

from mhub_cpu.core.errors import InputError
from mhub_cpu.core.progress import log
from mhub_cpu.dicomio.conversion import convert_series, verify_pixel_data
from mhub_cpu.dicomio.discovery import scan_directory, scan_files
from mhub_cpu.dicomio.headers import prepare_headers
from mhub_cpu.dicomio.selection import select_series
from mhub_cpu.dicomio.series import DicomSeries
from mhub_cpu.dicomio.uids import resolve_uids
from mhub_cpu.dicomio.validation import check_declared_size, check_sop_classes, drop_duplicate_files, ensure_readable, sort_and_validate
from mhub_cpu.dicomio.volume import NON_FINITE_FILL_HU, VolumeCheck, checked_volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")

__all__ = ["DicomSeries", "InputVolume", "check_input_path", "read_input", "is_nifti_path"]


@dataclass
class InputVolume:
    """The CT volume to process.

    Attributes:
        nifti_path: The volume as NIfTI (the input file itself, the verified dcm2niix result, or a
            working copy with non-finite voxels replaced).
        image: That NIfTI, loaded (voxels memory-mapped where uncompressed).
        check: What the volume check found (HU range, replaced voxels).
        series: The source DICOM series, or ``None`` when the input was a NIfTI file.
    """

    nifti_path: Path
    image: nib.Nifti1Image
    check: VolumeCheck
    series: DicomSeries | None

    def report(self) -> dict:
        """What reports say about the input beyond its path: format, intensities, repairs."""
        info: dict = {"format": "dicom" if self.series else "nifti", **self.check.report()}
        series = self.series
        if series is not None:
            info.update(
                series_instance_uid=series.series_instance_uid,
                study_instance_uid=series.study_instance_uid,
                instances=len(series.instances),
                generated_uids=list(series.generated_uids),
                sop_uids_from_file_meta=series.sop_uids_from_file_meta,
                missing_attributes=list(series.missing_attributes),
            )
            if series.ignored:
                info["ignored_files"] = list(series.ignored)
            if series.repairs:
                info["repairs"] = list(series.repairs)
        info["warnings"] = self.warnings()
        return info

    def warnings(self) -> list[str]:
        found = []
        series = self.series
        if series is not None and series.generated_uids:
            found.append(
                "the source series had blank " + " and ".join(series.generated_uids) + "; the outputs reference "
                "generated UIDs that exist in no archive, so they will not link to the source study in a PACS "
                "until the source is given proper UIDs"
            )
        if series is not None and series.sop_uids_from_file_meta:
            found.append("SOP Class/Instance UIDs were blank in the datasets and were taken from the file meta information")
        if series is not None:
            found.extend(series.repairs)
        if series is not None and series.missing_attributes:
            found.append("absent in the source and written empty in the outputs: " + ", ".join(series.missing_attributes))
        if self.check.non_finite_voxels:
            found.append(f"{self.check.non_finite_voxels} NaN/infinite voxels were replaced by {NON_FINITE_FILL_HU:g} HU (air)")
        return found


def is_nifti_path(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def check_input_path(path: Path) -> Path:
    """The input path, refused at once when it does not exist or cannot be read (before any model work)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input path does not exist: {path}")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read the input {path} (permission denied)")
    return path


def read_input(
    path: Path, work_dir: Path, series_uid: str | None = None, files: Sequence[Path] | None = None,
    max_memory_mb: float | None = None,
) -> InputVolume:
    """Locate, validate and (for DICOM) convert the CT input at ``path``.

    Args:
        path: A NIfTI file, or a folder holding one or more DICOM series.
        work_dir: Folder for the converted NIfTI (created if needed).
        series_uid: Series Instance UID to process when the folder holds several CT series.
        files: The DICOM files to read instead of every file below ``path`` (a batch names the
            files of one series, found by one scan of the whole collection).
        max_memory_mb: ``--max-memory``: the volume the headers declare may take a quarter of it
            (and of the memory available), checked before any pixel is read.

    Raises:
        InputError: the path does not exist, holds no usable CT series, or the series is broken;
            or the volume is not a 3-D CT in Hounsfield units (:func:`checked_volume`).
    """
    path = check_input_path(path)
    work_dir = Path(work_dir)
    if path.is_file():
        if not is_nifti_path(path):
            raise InputError(f"input file {path} is not a NIfTI file; pass a folder for DICOM input")
        if series_uid is not None:
            raise InputError("--series applies to DICOM folders, not to a NIfTI file")
        image, check = checked_volume(path, work_dir, max_memory_mb)
        return InputVolume(nifti_path=Path(image.get_filename() or path), image=image, check=check, series=None)
    if not os.access(path, os.R_OK | os.X_OK):
        raise InputError(f"cannot read the input folder {path} (permission denied)")
    series_list, skipped = scan_directory(path) if files is None else scan_files(files)
    log(f"found {len(series_list)} DICOM series in {path}" + (f" ({skipped} other files ignored)" if skipped else ""))
    series = select_series(series_list, series_uid, path)
    ignored_localizers = sum(len(s.files) for s in series_list if s.localizer and s.series_instance_uid == series.series_instance_uid)
    if ignored_localizers:
        log(f"ignored {ignored_localizers} localizer image(s) stored in the same series")
    ensure_readable(series.files)
    resolve_uids(series)
    drop_duplicate_files(series)
    sort_and_validate(series)
    check_declared_size(series, max_memory_mb)
    prepare_headers(series)
    check_sop_classes(series)
    verify_pixel_data(series)
    log(f"selected series {series.summary()}")
    nifti_path = convert_series(series, work_dir / "image.nii")
    image, check = checked_volume(nifti_path, work_dir, max_memory_mb)
    return InputVolume(nifti_path=Path(image.get_filename() or nifti_path), image=image, check=check, series=series)
