"""What is not CT, or cannot be used as it is, is refused with a message naming the cause (both commands)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

from conftest import CT_DICOM, CT_NIFTI, SCANNER_DICOM, copy_series
from mhub_cpu.core.errors import InputError
from mhub_cpu.dicomio import read_input
from mhub_cpu_dev.standins.bodypart import random_state_dict, write_model_dir


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mhub_cpu.cli", *args], capture_output=True, text=True)


def last_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def bpr_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("bpr") / "model", random_state_dict(seed=4))


def ct_array() -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(CT_NIFTI)
    return np.asarray(image.dataobj), image.affine


def test_mr_nifti_is_refused_by_both_commands(tmp_path: Path, demo_model: Path, bpr_model: Path) -> None:
    data, affine = ct_array()
    mr = np.clip(data.astype(np.float32) + 1024, 0, None) * 0.7  # MR-like: nothing below 0
    nib.save(nib.Nifti1Image(mr, affine), tmp_path / "mr.nii.gz")
    for command, model in (("segment", demo_model), ("bodypart", bpr_model)):
        result = cli(command, "--input", str(tmp_path / "mr.nii.gz"), "--output", str(tmp_path / command), "--model", str(model))
        assert result.returncode == 2
        assert re.fullmatch(
            r"mhub-cpu: error: intensities 0\.\.[0-9.]+ do not look like CT in Hounsfield units \(a CT has air or padding "
            r"at or below -500 HU\); these models need CT, not MR, PET or unscaled data", last_line(result),
        ), last_line(result)
    assert list((tmp_path / "segment").iterdir()) == []
    assert [p.name for p in (tmp_path / "bodypart").iterdir()] == ["qa.json"]


def test_nan_outside_the_field_of_view_is_replaced_by_air_and_reported(tmp_path: Path, demo_model: Path, bpr_model: Path) -> None:
    data, affine = ct_array()
    volume = data.astype(np.float32)
    x, y = np.meshgrid(np.arange(volume.shape[0]), np.arange(volume.shape[1]), indexing="ij")
    outside = (x - volume.shape[0] / 2) ** 2 + (y - volume.shape[1] / 2) ** 2 > (0.48 * min(volume.shape[:2])) ** 2
    volume[outside] = np.nan
    volume[0, 0, 0] = np.inf
    expected = int(outside.sum()) * volume.shape[2]
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "nan.nii.gz")
    clean = volume.copy()
    clean[~np.isfinite(clean)] = -1024
    nib.save(nib.Nifti1Image(clean, affine), tmp_path / "air.nii.gz")
    runs = {}
    for name in ("nan", "air"):
        result = cli("segment", "--input", str(tmp_path / f"{name}.nii.gz"), "--output", str(tmp_path / name), "--model", str(demo_model))
        assert result.returncode == 0, result.stderr
        runs[name] = np.asarray(nib.load(tmp_path / name / "segmentation.nii.gz").dataobj)
    report = json.loads((tmp_path / "nan" / "report.json").read_text())
    assert report["input"]["non_finite_voxels"] == {"count": expected, "replaced_by_hu": -1024.0}
    assert any("NaN/infinite voxels were replaced by -1024 HU" in w for w in report["input"]["warnings"])
    np.testing.assert_array_equal(runs["nan"], runs["air"])  # the documented fill value, nothing else
    assert runs["nan"].any()
    result = cli("bodypart", "--input", str(tmp_path / "nan.nii.gz"), "--output", str(tmp_path / "bpr"), "--model", str(bpr_model))
    assert result.returncode == 0, result.stderr
    qa = json.loads((tmp_path / "bpr" / "qa.json").read_text())
    assert qa["input"]["non_finite_voxels"]["count"] == expected
    nib.save(nib.Nifti1Image(np.full((8, 8, 4), np.nan, np.float32), affine), tmp_path / "allnan.nii.gz")
    result = cli("segment", "--input", str(tmp_path / "allnan.nii.gz"), "--output", str(tmp_path / "x"), "--model", str(demo_model))
    assert result.returncode == 2 and last_line(result) == "mhub-cpu: error: allnan.nii.gz holds no finite voxel (all NaN or infinite)"


def test_an_empty_segmentation_is_the_same_refusal_for_dicom_and_nifti(tmp_path: Path, demo_model: Path) -> None:
    """A labelling engine that finds nothing (as a model may on a body region it does not cover)."""
    from mhub_cpu.core.errors import ProcessingError
    from mhub_cpu.segment.job import SegmentRequest, run_segment

    class FindsNothing:
        def prepare(self, request: SegmentRequest, bundle: object, timer: object) -> None:
            pass

        def label(self, image: nib.Nifti1Image, timer: object) -> tuple[nib.Nifti1Image, dict]:
            return nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), {"engine": "finds nothing"}

    messages = []
    for source in (CT_NIFTI, CT_DICOM):
        out = tmp_path / source.name
        with pytest.raises(ProcessingError) as refused:
            run_segment(SegmentRequest(input_path=source, output_dir=out, model=str(demo_model)), FindsNothing())
        messages.append(str(refused.value))
        assert list(out.iterdir()) == []
    assert messages[0] == messages[1] == (
        "the model found none of its 23 structures in this image, so there is no segmentation "
        "to write (does the image show the body region the model was trained on?)"
    )


def test_gantry_tilt_is_named_with_its_angle(tmp_path: Path) -> None:
    files = copy_series(CT_DICOM, tmp_path / "tilt")
    z0 = float(pydicom.dcmread(files[0]).ImagePositionPatient[2])
    for path in files:
        dataset = pydicom.dcmread(path)
        x, y, z = (float(v) for v in dataset.ImagePositionPatient)
        dataset.ImagePositionPatient = [x, y + (z - z0) * np.tan(np.radians(12.0)), z]
        dataset.GantryDetectorTilt = 12
        dataset.save_as(path)
    with pytest.raises(InputError) as refused:
        read_input(tmp_path / "tilt", tmp_path / "work")
    assert re.match(
        r"series [0-9.]+ is gantry-tilted by 12\.0 degrees; Gantry/Detector Tilt \(0018,1120\) says 12 degrees: its slices "
        r"are sheared", str(refused.value),
    ), refused.value
    assert "resample it to an untilted grid first" in str(refused.value)


def test_localizers_are_named_and_never_a_slice(tmp_path: Path) -> None:
    copy_series(CT_DICOM, tmp_path / "scouts", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    with pytest.raises(InputError, match=r"the CT images in .* are all localizers \(scouts: Image Type LOCALIZER\)"):
        read_input(tmp_path / "scouts", tmp_path / "work")
    mixed = tmp_path / "mixed"
    shutil.copytree(CT_DICOM, mixed)
    scout = pydicom.dcmread(next(CT_DICOM.iterdir()))
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    scout.SOPInstanceUID = scout.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    scout.save_as(mixed / "scout.dcm")
    volume = read_input(mixed, tmp_path / "work2")
    assert len(volume.series.instances) == 112 and all("scout" not in p.name for p in volume.series.files)
    with pytest.raises(InputError, match="holds only localizer"):
        read_input(tmp_path / "scouts", tmp_path / "work3", series_uid=str(scout.SeriesInstanceUID))


def test_a_series_with_a_blank_uid_is_selectable_by_its_generated_uid(tmp_path: Path, demo_model: Path) -> None:
    shutil.copytree(CT_DICOM, tmp_path / "in" / "ct")
    shutil.copytree(SCANNER_DICOM, tmp_path / "in" / "scanner")
    with pytest.raises(InputError, match="2 CT series") as refused:
        read_input(tmp_path / "in", tmp_path / "work")
    listed = re.search(r"([0-9.]+) \(generated: the source UID is blank\)", str(refused.value))
    assert listed, refused.value
    uid = listed.group(1)
    out = tmp_path / "out"
    result = cli("segment", "--input", str(tmp_path / "in"), "--output", str(out), "--model", str(demo_model), "--series", uid)
    assert result.returncode in (0, 4), result.stderr  # 4: the demo model may find nothing in 20 upper-abdomen slices
    if result.returncode == 0:
        report = json.loads((out / "report.json").read_text())
        assert report["input"]["series_instance_uid"] == uid
        assert pydicom.dcmread(out / "segmentation.dcm").ReferencedSeriesSequence[0].SeriesInstanceUID == uid
    assert read_input(tmp_path / "in", tmp_path / "work2", series_uid=uid).series.series_instance_uid == uid


def test_an_unsupported_transfer_syntax_is_named(tmp_path: Path) -> None:
    target = tmp_path / "mpeg2"
    target.mkdir()
    for path in sorted(CT_DICOM.iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.PixelData = encapsulate([dataset.PixelData])
        dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        dataset.save_as(target / path.name, enforce_file_format=True)
    with pytest.raises(InputError) as refused:
        read_input(target, tmp_path / "work")
    assert str(refused.value) == (
        "cannot decode the pixel data of CT_0001.dcm: transfer syntax MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100) "
        "is not supported by this tool (no pixel data decoder exists for it in pydicom)"
    )


def test_nifti_input_with_series_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--series applies to DICOM folders"):
        read_input(CT_NIFTI, tmp_path, series_uid="1.2.3")


ROWS_US = bytes([0x28, 0x00, 0x10, 0x00]) + b"US" + bytes([2, 0])


def patched_series(target: Path, patch) -> Path:
    """A few files of the sample series with the bytes of their Rows element changed by ``patch``."""
    target.mkdir()
    for path in sorted(CT_DICOM.iterdir())[:6]:
        data = bytearray(path.read_bytes())
        where = data.find(ROWS_US)
        assert where > 0, "explicit VR little endian Rows element expected"
        patch(data, where)
        (target / path.name).write_bytes(bytes(data))
    return target


def odd_length(data: bytearray, where: int) -> None:
    data[where + 6] = 3  # 3 bytes for a US value: pydicom's BytesLengthException on first use


def wrong_vr(data: bytearray, where: int) -> None:
    data[where + 4:where + 6] = b"DS"  # Rows as a decimal string of two bytes


@pytest.mark.parametrize("patch,message", [
    (odd_length, r"broken DICOM file .*CT_0001\.dcm: element \(0028,0010\) \(Rows\) cannot be decoded: Expected total bytes"),
    (wrong_vr, r"Rows is missing or empty in CT_0001\.dcm"),
])
def test_a_malformed_header_element_is_an_input_error_naming_file_and_tag(tmp_path: Path, patch, message: str) -> None:
    series = patched_series(tmp_path / "series", patch)
    result = cli("segment", "--input", str(series), "--output", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert re.search(message, last_line(result)), last_line(result)
    assert not (tmp_path / "out" / "segmentation.dcm").exists()


def test_missing_rows_is_an_input_error(tmp_path: Path) -> None:
    copy_series(CT_DICOM, tmp_path / "series")
    for path in sorted((tmp_path / "series").iterdir()):
        dataset = pydicom.dcmread(path)
        del dataset.Rows
        dataset.save_as(path)
    result = cli("segment", "--input", str(tmp_path / "series"), "--output", str(tmp_path / "out"))
    assert result.returncode == 2 and last_line(result) == "mhub-cpu: error: Rows is missing or empty in CT_0001.dcm"
