"""NIfTI reading: ISA-L decompression gives nibabel's voxels; the unscaled array keeps the stored type."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from nibabel.openers import ImageOpener

from mhub_cpu.dicomio import nifti


def _image(slope: float = 1.0, inter: float = 0.0) -> nib.Nifti1Image:
    data = np.random.default_rng(0).integers(-1024, 3000, size=(31, 17, 9)).astype(np.int16)
    image = nib.Nifti1Image(data, np.diag([0.7, 0.7, 2.5, 1.0]))
    image.header.set_slope_inter(slope, inter)
    return image


def test_gz_read_through_isal_equals_nibabel(tmp_path):
    import isal  # noqa: F401 - a runtime dependency: missing is a failure, not a skip
    path = tmp_path / "ct.nii.gz"
    nib.save(_image(), path)
    expected = gzip.open(path).read()  # the bytes as zlib sees them
    image = nifti.load_nifti(path)
    with ImageOpener(path) as handle:  # the opener nibabel now uses for .gz
        assert type(handle.fobj).__module__.startswith("isal")
        assert handle.fobj.read() == expected
    np.testing.assert_array_equal(image.get_fdata(), _image().get_fdata())


def test_gz_writing_still_works_after_registration(tmp_path):
    nib.save(_image(), tmp_path / "a.nii.gz")
    nifti.load_nifti(tmp_path / "a.nii.gz")
    nib.save(_image(), tmp_path / "b.nii.gz")
    with gzip.open(tmp_path / "b.nii.gz") as handle:
        assert len(handle.read()) > 31 * 17 * 9 * 2
    np.testing.assert_array_equal(nib.load(tmp_path / "b.nii.gz").get_fdata(), _image().get_fdata())


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_unscaled_array_keeps_stored_type_and_scaling(tmp_path, suffix):
    path = tmp_path / f"ct{suffix}"
    nib.save(_image(slope=2.0, inter=-1024.0), path)
    stored, slope, inter = nifti.unscaled_array(nifti.load_nifti(path))
    assert stored.dtype == np.int16
    assert (slope, inter) == (2.0, -1024.0)
    np.testing.assert_array_equal(stored * slope + inter, nib.load(path).get_fdata())
