"""Preprocessing and its inverse agree with the MONAI transforms of the Slicer script."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import (
    Compose,
    ConcatItemsd,
    CropForegroundd,
    EnsureTyped,
    Invertd,
    Lambdad,
    LoadImaged,
    Orientationd,
    ScaleIntensityRanged,
    Spacingd,
)

from conftest import CT_NIFTI
from mhub_cpu.core.errors import InputError
from mhub_cpu.segment.preprocess import (
    foreground_box,
    model_orientation,
    normalize_intensity,
    prepare,
    restore_labels,
    target_spacing,
    to_canonical,
)

CONFIG = {"normalize_mode": "range", "intensity_bounds": [-200.0, 300.0], "crop_foreground": True, "orientation_ras": True}


def _monai_chain(pixdim, orientation_ras: bool = True):
    transforms = [
        ConcatItemsd(keys=["image1"], name="image", dim=0),
        EnsureTyped(keys="image", data_type="tensor", dtype=torch.float),
        ScaleIntensityRanged(keys="image", a_min=-200.0, a_max=300.0, b_min=-1, b_max=1, clip=False),
        Lambdad(keys="image", func=torch.sigmoid),
        *([Orientationd(keys="image", axcodes="RAS")] if orientation_ras else []),
        CropForegroundd(keys="image", source_key="image1", margin=10, allow_smaller=True),
        Spacingd(keys=["image"], pixdim=pixdim, mode=["bilinear"], dtype=torch.float,
                 min_pixdim=np.array(pixdim) * 0.75, max_pixdim=np.array(pixdim) * 1.25),
    ]
    return Compose(transforms)


@pytest.fixture(scope="module")
def loaded():
    return LoadImaged(keys=["image1"], ensure_channel_first=True, dtype=None, image_only=False)({"image1": str(CT_NIFTI)})


@pytest.mark.parametrize("pixdim", [[1.5, 1.5, 1.5], [2.2, 2.2, 2.2], [3.0, 3.0, 3.0], [1.5, 1.5, 3.0]])
def test_prepare_matches_monai(loaded, pixdim) -> None:
    chain = _monai_chain(pixdim)
    expected = chain(dict(loaded))["image"][0].numpy()
    prepared = prepare(to_canonical(nib.load(CT_NIFTI)), {**CONFIG, "resample_resolution": pixdim})
    assert prepared.image.shape == expected.shape
    np.testing.assert_allclose(prepared.image, expected, atol=2e-5)


@pytest.mark.parametrize("pixdim", [[1.5, 1.5, 1.5], [2.2, 2.2, 2.2]])
def test_restore_labels_matches_monai_invert(loaded, pixdim) -> None:
    chain = _monai_chain(pixdim)
    data = chain(dict(loaded))
    prepared = prepare(to_canonical(nib.load(CT_NIFTI)), {**CONFIG, "resample_resolution": pixdim})
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=prepared.image.shape, dtype=np.uint8)
    data["pred"] = data["image"].clone()
    data["pred"].array = torch.from_numpy(labels[None].astype(np.float32))
    expected = Invertd(keys="pred", orig_keys="image", transform=chain, nearest_interp=True)(data)["pred"][0].numpy()
    ours = restore_labels(labels, prepared)
    assert ours.shape == expected.shape
    assert (ours == expected.astype(np.uint8)).mean() > 0.999


def test_keep_spacing_within_quarter_of_target() -> None:
    assert target_spacing((3.0, 0.8, 1.0), [1.5, 1.0, 1.25]) == (1.5, 0.8, 1.0)


def test_normalisation_is_sigmoid_of_scaled_range() -> None:
    values = np.array([-200.0, 50.0, 300.0, 1000.0], dtype=np.float32)
    out = normalize_intensity(values, "ct", [-200.0, 300.0])
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-np.array([-1.0, 0.0, 1.0, 3.8]))), rtol=1e-6)


def test_foreground_box_margin_and_empty_volume() -> None:
    volume = np.full((50, 40, 30), -1000.0, dtype=np.float32)
    volume[20:25, 5:8, 0:3] = 40.0
    assert foreground_box(volume) == (slice(10, 35), slice(0, 18), slice(0, 13))
    with pytest.raises(InputError, match="no voxel above 0"):
        foreground_box(np.full((5, 5, 5), -1000.0, dtype=np.float32))


@pytest.mark.parametrize("orientation_ras", [True, False])
def test_orientation_ras_is_honoured(tmp_path, orientation_ras: bool) -> None:
    """A volume stored LPS is reoriented to RAS only when the model says ``orientation_ras``, as in the
    Slicer script (``Orientationd`` only then); otherwise the network sees the stored voxel order."""
    source = nib.load(CT_NIFTI)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = np.array(source.shape[:2]) - 1
    lps = nib.Nifti1Image(np.asarray(source.dataobj)[::-1, ::-1], source.affine @ flip, source.header)
    path = tmp_path / "lps.nii.gz"
    nib.save(lps, path)
    loaded = LoadImaged(keys=["image1"], ensure_channel_first=True, dtype=None, image_only=False)({"image1": str(path)})
    pixdim = [2.2, 2.2, 2.2]
    expected = _monai_chain(pixdim, orientation_ras)(loaded)["image"][0].numpy()
    config = {**CONFIG, "orientation_ras": orientation_ras, "resample_resolution": pixdim}
    oriented = model_orientation(nib.load(path), config)
    assert nib.aff2axcodes(oriented.affine) == (("R", "A", "S") if orientation_ras else ("L", "P", "S"))
    prepared = prepare(oriented, config)
    assert prepared.image.shape == expected.shape
    np.testing.assert_allclose(prepared.image, expected, atol=2e-5)
