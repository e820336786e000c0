"""Reading CT input: a folder of DICOM files (any nesting, other files ignored) or a NIfTI file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..progress import log
from .conversion import convert_series, verify_pixel_data
from .series import (
    DicomSeries,
    check_sop_classes,
    ensure_readable,
    resolve_uids,
    scan_directory,
    select_series,
    sort_and_validate,
)

NIFTI_SUFFIXES = (".nii", ".nii.gz")

__all__ = ["DicomSeries", "InputVolume", "read_input", "is_nifti_path"]


@dataclass
class InputVolume:
    """The CT volume to process.

    Attributes:
        nifti_path: The volume as NIfTI (the input file itself, or the verified dcm2niix result).
        series: The source DICOM series, or ``None`` when the input was a NIfTI file.
    """

    nifti_path: Path
    series: DicomSeries | None


def is_nifti_path(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_input(path: Path, work_dir: Path, series_uid: str | None = None) -> InputVolume:
    """Locate, validate and (for DICOM) convert the CT input at ``path``.

    Args:
        path: A NIfTI file, or a folder holding one or more DICOM series.
        work_dir: Folder for the converted NIfTI (created if needed).
        series_uid: Series Instance UID to process when the folder holds several CT series.

    Raises:
        InputError: the path does not exist, holds no usable CT series, or the series is broken.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input path does not exist: {path}")
    if path.is_file():
        if is_nifti_path(path):
            return InputVolume(nifti_path=path, series=None)
        raise InputError(f"input file {path} is not a NIfTI file; pass a folder for DICOM input")
    series_list, skipped = scan_directory(path)
    log(f"found {len(series_list)} DICOM series in {path}" + (f" ({skipped} other files ignored)" if skipped else ""))
    series = select_series(series_list, series_uid, path)
    ensure_readable(series.files)
    sort_and_validate(series)
    resolve_uids(series)
    check_sop_classes(series)
    verify_pixel_data(series)
    log(f"selected series {series.summary()}")
    nifti_path = convert_series(series, Path(work_dir) / "image.nii")
    return InputVolume(nifti_path=nifti_path, series=series)
