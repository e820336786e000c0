"""DICOM series → NIfTI with dcm2niix, verified against the DICOM headers and pixel data."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, get_decoder

from mhub_cpu.core.errors import InputError
from mhub_cpu.core.progress import log
from mhub_cpu.dicomio.geometry import axis_mapping, dicom_grid_affine_ras, dicom_grid_shape
from mhub_cpu.dicomio.nifti import load_nifti, unscaled_array
from mhub_cpu.dicomio.series import DicomSeries

#: Transfer syntaxes whose Pixel Data is stored natively (not encapsulated), PS3.5 A.1–A.4.
NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}


def dcm2niix_binary() -> str:
    """Path of dcm2niix: the one shipped by the ``dcm2niix`` PyPI package, else the PATH."""
    try:
        import dcm2niix

        return str(dcm2niix.bin)
    except (ImportError, AttributeError):
        found = shutil.which("dcm2niix")
        if not found:
            raise InputError("dcm2niix is not installed (pip install dcm2niix)") from None
        return found


def transfer_syntax_problem(dataset: pydicom.Dataset) -> str | None:
    """Why the Pixel Data of ``dataset`` cannot be decoded here, naming its transfer syntax; else None."""
    meta = getattr(dataset, "file_meta", None)
    uid = pydicom.uid.UID(str(meta.get("TransferSyntaxUID", "") or "")) if meta is not None else pydicom.uid.UID("")
    if not uid:
        return "the file meta information names no Transfer Syntax UID (0002,0010)"
    if uid in NATIVE_SYNTAXES:
        return None
    described = f"transfer syntax {uid.name} ({uid})" if uid.is_transfer_syntax else f"unknown transfer syntax {uid}"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"{described} is not supported by this tool (no pixel data decoder exists for it in pydicom)"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        return f"{described} needs a decoder plugin that is not installed" + (f" ({missing})" if missing else "")
    return None


def verify_pixel_data(series: DicomSeries) -> None:
    """Refuse truncated or undecodable Pixel Data (7FE0,0010) in any instance of the series.

    pydicom reads a truncated native Pixel Data element without complaint, so its length is
    compared with Rows × Columns × Samples × BitsAllocated / 8; encapsulated (compressed) data is
    decoded. A transfer syntax no installed decoder reads is named in the refusal.
    """
    for path in series.files:
        try:
            dataset = pydicom.dcmread(path)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types for broken files
            raise InputError(f"cannot read {path}: {exc}") from exc
        if "PixelData" not in dataset or dataset.PixelData in (None, b""):
            raise InputError(f"{path} has no Pixel Data (7FE0,0010)")
        problem = transfer_syntax_problem(dataset)
        if problem:
            raise InputError(f"cannot decode the pixel data of {path.name}: {problem}")
        try:
            if dataset.file_meta.TransferSyntaxUID in NATIVE_SYNTAXES:
                expected = (
                    int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel", 1) or 1)
                    * int(dataset.BitsAllocated) // 8
                )
                if len(dataset.PixelData) < expected:
                    raise InputError(
                        f"truncated DICOM file {path}: Pixel Data has {len(dataset.PixelData)} bytes, "
                        f"{expected} expected"
                    )
            pixels = dataset.pixel_array
        except InputError:
            raise
        except Exception as exc:  # pydicom/decoders raise many types for corrupt data
            raise InputError(f"cannot decode the pixel data of {path.name}: {_one_line(exc)}") from exc
        if pixels.ndim != 2:
            raise InputError(
                f"{path.name} holds pixel data of shape {pixels.shape}; one grey-scale frame per file is needed "
                "(multi-frame or colour images are not supported)"
            )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def convert_series(series: DicomSeries, output_path: Path) -> Path:
    """Convert the series to a NIfTI file with dcm2niix and check it against the DICOM data.

    Only the series' own files are given to dcm2niix (linked into a temporary folder), so other
    series in the input folder cannot leak in.

    Raises:
        InputError: dcm2niix failed, made other than one volume, or the result's geometry or
            voxel values disagree with the DICOM headers and pixel data.
    """
    with tempfile.TemporaryDirectory(prefix="mhub-cpu-dcm2niix-") as tmp:
        source = Path(tmp) / "dicom"
        target = Path(tmp) / "nifti"
        source.mkdir()
        target.mkdir()
        for index, path in enumerate(series.files):
            (source / f"{index:05d}.dcm").symlink_to(path.resolve())
        command = [dcm2niix_binary(), "-z", "n", "-b", "n", "-m", "y", "-i", "n", "-f", "image", "-o", str(target), str(source)]
        result = subprocess.run(command, capture_output=True, text=True)
        produced = sorted(target.glob("*.nii*"))
        if result.returncode != 0 or len(produced) != 1:
            said = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
            reasons = [line for line in said if line.lower().startswith(("error", "warning"))] or said[-1:]
            raise InputError(
                f"dcm2niix could not convert series {series.series_instance_uid} into one volume "
                f"(exit {result.returncode}, {len(produced)} volumes): {' | '.join(reasons[-3:])}"
            )
        output_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(produced[0], output_path)
    check_conversion(series, output_path)
    return output_path


def check_conversion(series: DicomSeries, nifti_path: Path) -> None:
    """Verify that the NIfTI grid equals the DICOM grid and its voxels equal the DICOM pixels.

    The grid must match up to axis order and flips (see :func:`axis_mapping`); then the first,
    middle and last slices are compared voxel by voxel in Hounsfield units.
    """
    image = load_nifti(nifti_path)
    if len(image.shape) != 3:
        raise InputError(f"converted image has shape {image.shape}, expected a 3D volume")
    dicom_affine = dicom_grid_affine_ras(series.instances)
    dicom_shape = dicom_grid_shape(series.instances)
    mapping = axis_mapping(image.affine, image.shape, dicom_affine, dicom_shape)
    stored, slope, inter = unscaled_array(image)
    volume = mapping.apply(stored)  # a view: (column, row, slice) order, only 3 slices are read
    for index in sorted({0, len(series.files) // 2, len(series.files) - 1}):
        dataset = pydicom.dcmread(series.files[index])
        expected = apply_modality_lut(dataset.pixel_array, dataset).astype(np.float64).T
        difference = np.abs(volume[:, :, index] * slope + inter - expected).max()
        if difference > 0.5:
            raise InputError(
                f"converted volume disagrees with {series.files[index].name} by up to {difference:.1f} HU "
                "(slice order or orientation lost in conversion)"
            )
    log(f"geometry check passed: {dicom_shape[0]}x{dicom_shape[1]}x{dicom_shape[2]} voxels match the DICOM headers and pixels")
