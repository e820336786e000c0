"""The speed paths of the bodypart engine: matrix preprocessing, batching, INT8.

* Preprocessing (two GEMMs per slab, HU scaling after resizing) equals bpreg's own
  ``Nifti2Npy.preprocess_nifti`` also for swapped in-plane axes and a feet-pointing slice axis.
* Batched inference gives the unbatched scores (f32).
* INT8 (NNCF, calibrated on the sample CTs) gives the same tag and flags as f32 on the
  parity fixture volume, with the parity test's model scale.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO
from mhub_cpu.bodypart.model import ScoreModel
from mhub_cpu.bodypart.modelfiles import open_model_dir
from mhub_cpu.bodypart.pipeline import Options, run
from mhub_cpu.bodypart.preprocess import prepare_slices
from mhub_cpu.runtime.precision import Precision
from mhub_cpu_dev.reference.bpreg import import_inference_model
from mhub_cpu_dev.standins.bodypart import random_state_dict, write_model_dir

CT = REPO / "data" / "ct" / "abdomen_3mm.nii.gz"
FLAG_KEYS = ("body part examined tag", "reverse z-ordering", "valid z-spacing")


@pytest.mark.parametrize("swap,flip", [(False, False), (True, False), (False, True), (True, True)])
def test_preprocessing_matches_bpreg(tmp_path: Path, swap: bool, flip: bool) -> None:
    import_inference_model()  # installs the stubs bpreg's imports need
    from bpreg.preprocessing.nifti2npy import Nifti2Npy

    image = nib.load(CT)
    data = np.asanyarray(image.dataobj)[:, :, 40:52]
    affine = image.affine.copy()
    if swap:
        data, affine = np.ascontiguousarray(data.transpose(1, 0, 2)), affine[:, [1, 0, 2, 3]]
    if flip:
        data, affine = data[:, :, ::-1], affine @ np.diag([1.0, 1.0, -1.0, 1.0])
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), path)
    expected, _ = Nifti2Npy(target_pixel_spacing=3.5, min_hu=-1000, max_hu=1500, size=128).preprocess_nifti(str(path))
    ours = prepare_slices(nib.load(path)).slices
    assert np.abs(ours - np.transpose(expected, (2, 0, 1))).max() <= 1e-4


def test_batching_gives_unbatched_scores(tmp_path: Path) -> None:
    model = open_model_dir(write_model_dir(tmp_path / "model", random_state_dict(seed=2)))
    slices = prepare_slices(nib.load(CT), np.arange(30, 70)).slices
    single = ScoreModel(model, Precision.F32, batch=1).predict(slices)
    batched = ScoreModel(model, Precision.F32, batch=32).predict(slices)  # one full batch and one partial
    assert np.abs(single - batched).max() <= 1e-4


def test_int8_same_tag_and_flags_as_f32(tmp_path: Path) -> None:
    state = random_state_dict(seed=1)
    model_dir = write_model_dir(tmp_path / "model", state)
    raw = ScoreModel(open_model_dir(model_dir), Precision.F32).predict(prepare_slices(nib.load(CT)).slices)
    # the parity test's scale: first slices at 0, a raw span of 5.0, expected slope = observed slope
    low = float(raw[:10].mean())
    span = 5.0 if raw[-10:].mean() > low else -5.0
    slope = abs(np.polyfit(np.arange(len(raw)) * 3.0, (raw - low) * 100 / span, 1)[0])
    write_model_dir(model_dir, state, raw_low=low, raw_high=low + span, slope_mean=float(slope))
    results = {}
    for precision in (Precision.F32, Precision.INT8):
        run(CT, tmp_path / precision, open_model_dir(model_dir), Options(precision=precision))
        results[precision] = json.loads((tmp_path / precision / "bpreg.json").read_text())
    assert results["f32"]["body part examined tag"] != "NONE"
    for key in FLAG_KEYS:
        assert results["int8"][key] == results["f32"][key], key
    qa = json.loads((tmp_path / "int8" / "qa.json").read_text())
    assert qa["model"]["precision"] == "int8" and "int8-" in qa["model"]["int8_ir"]
