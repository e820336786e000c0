"""DICOM input: discovery in messy folders, CT selection, ordering, blank UIDs, broken data."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from conftest import CT_DICOM, SCANNER_DICOM, copy_series
from mhub_cpu.core.errors import InputError
from mhub_cpu.dicomio import read_input
from mhub_cpu.dicomio.conversion import check_conversion

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def test_reads_the_ct_series_and_converts_with_matching_geometry(tmp_path: Path) -> None:
    volume = read_input(CT_DICOM, tmp_path)
    first = pydicom.dcmread(next(CT_DICOM.iterdir()), stop_before_pixels=True)
    assert volume.series.series_instance_uid == first.SeriesInstanceUID
    assert len(volume.series.instances) == 112
    z = [float(ds.ImagePositionPatient[2]) for ds in volume.series.instances]
    assert z == sorted(z)
    image = nib.load(volume.nifti_path)
    reference = nib.load(CT_DICOM.parent / "abdomen_3mm.nii.gz")
    # same voxels in the same place (up to axis order): compare in canonical RAS
    np.testing.assert_array_equal(
        np.asarray(nib.as_closest_canonical(image).dataobj), np.asarray(nib.as_closest_canonical(reference).dataobj)
    )
    np.testing.assert_allclose(nib.as_closest_canonical(image).affine, nib.as_closest_canonical(reference).affine, atol=1e-3)


def test_nested_shuffled_folder_with_other_files(tmp_path: Path) -> None:
    files = sorted(CT_DICOM.iterdir())
    random.Random(0).shuffle(files)
    for index, path in enumerate(files):
        target = tmp_path / "in" / f"sub{index % 3}" / "deeper" / f"img{index:03d}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    (tmp_path / "in" / "README.txt").write_text("not dicom")
    (tmp_path / "in" / "sub1" / "notes.json").write_text("{}")
    volume = read_input(tmp_path / "in", tmp_path / "work")
    z = [float(ds.ImagePositionPatient[2]) for ds in volume.series.instances]
    assert z == sorted(z) and len(z) == 112


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_input(tmp_path / "nope", tmp_path / "work")


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM image files"):
        read_input(tmp_path / "in", tmp_path / "work")


def test_mr_series_is_refused(tmp_path: Path) -> None:
    copy_series(CT_DICOM, tmp_path / "mr", Modality="MR", SOPClassUID=MR_IMAGE_STORAGE)
    with pytest.raises(InputError, match="no CT series.*MR"):
        read_input(tmp_path / "mr", tmp_path / "work")


def test_mr_series_named_explicitly_is_refused(tmp_path: Path) -> None:
    uid = generate_uid()
    copy_series(CT_DICOM, tmp_path / "mr", Modality="MR", SOPClassUID=MR_IMAGE_STORAGE, SeriesInstanceUID=uid)
    with pytest.raises(InputError, match="modality MR, not CT"):
        read_input(tmp_path / "mr", tmp_path / "work", series_uid=uid)


def test_two_ct_series_need_a_choice(tmp_path: Path) -> None:
    shutil.copytree(CT_DICOM, tmp_path / "in" / "a")
    second = generate_uid()
    copy_series(CT_DICOM, tmp_path / "in" / "b", SeriesInstanceUID=second)
    with pytest.raises(InputError, match="2 CT series.*--series") as error:
        read_input(tmp_path / "in", tmp_path / "work")
    assert second in str(error.value)
    chosen = read_input(tmp_path / "in", tmp_path / "work", series_uid=second)
    assert chosen.series.series_instance_uid == second
    assert all(path.parent.name == "b" for path in chosen.series.files)


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    shutil.copytree(CT_DICOM, tmp_path / "in")
    victim = sorted((tmp_path / "in").iterdir())[40]
    victim.write_bytes(victim.read_bytes()[:-5000])
    with pytest.raises(InputError, match=f"truncated DICOM file .*{victim.name}"):
        read_input(tmp_path / "in", tmp_path / "work")


def test_missing_slice_is_a_gap(tmp_path: Path) -> None:
    shutil.copytree(CT_DICOM, tmp_path / "in")
    sorted((tmp_path / "in").iterdir())[50].unlink()
    with pytest.raises(InputError, match="non-uniform slice spacing"):
        read_input(tmp_path / "in", tmp_path / "work")


def test_scanner_series_with_jpeg2000_and_blank_uids(tmp_path: Path) -> None:
    volume = read_input(SCANNER_DICOM, tmp_path)
    series = volume.series
    assert sorted(series.generated_uids) == ["SeriesInstanceUID", "StudyInstanceUID"]
    assert series.sop_uids_from_file_meta
    for path, dataset in zip(series.files, series.instances):
        assert dataset.SOPInstanceUID == pydicom.dcmread(path, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID
    assert nib.load(volume.nifti_path).shape == (512, 512, 20)
    again = read_input(SCANNER_DICOM, tmp_path / "again")
    assert again.series.series_instance_uid == series.series_instance_uid, "generated UIDs are deterministic"


def test_geometry_check_catches_a_flipped_conversion(tmp_path: Path) -> None:
    volume = read_input(CT_DICOM, tmp_path)
    image = nib.load(volume.nifti_path)
    flipped = nib.Nifti1Image(np.asarray(image.dataobj)[:, :, ::-1].copy(), image.affine)
    nib.save(flipped, tmp_path / "flipped.nii.gz")
    with pytest.raises(InputError, match="disagrees"):
        check_conversion(volume.series, tmp_path / "flipped.nii.gz")
