"""Parity with bpreg 1.1.0 itself: same weights, same CT, same bpreg.json values.

bpreg is installed from PyPI without its pinned dependencies (torch 1.8.1 and friends cannot be
installed on Python 3.11); ``bodypart_helpers/bpreg_stubs.py`` stubs only the imports its
inference never uses (torchvision, imgaug, skimage, numpy.lib.arraysetops, requests) and says why.
Both sides load the same randomly initialised weights from a model directory in the public layout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from mhub_cpu.bodypart.modelfiles import open_model_dir
from mhub_cpu.bodypart.pipeline import Options, run
from mhub_cpu.runtime.precision import Precision
from mhub_cpu_dev.reference.bpreg import import_inference_model
from mhub_cpu_dev.standins.bodypart import random_state_dict, write_model_dir

SHARED = REPO / "data"
CT = SHARED / "ct" / "abdomen_3mm.nii.gz"
SCORE_KEYS = ("cleaned slice scores", "unprocessed slice scores", "z")
FLAG_KEYS = ("body part examined tag", "reverse z-ordering", "valid z-spacing")
SCALAR_KEYS = ("expected slope", "observed slope", "slope ratio", "expected z-spacing", "z-spacing")


def _bpreg_raw_scores(inference_model, nifti: Path) -> np.ndarray:
    x, _ = inference_model.n2n.preprocess_nifti(str(nifti))
    return inference_model.predict_tensor(torch.tensor(np.transpose(x, (2, 0, 1))[:, np.newaxis]))


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """bpreg's and our bpreg.json for the sample CT, plus bpreg's loaded state_dict."""
    InferenceModel = import_inference_model()
    root = tmp_path_factory.mktemp("parity")
    state = random_state_dict(seed=1)
    model_dir = write_model_dir(root / "model", state)
    reference = InferenceModel(str(model_dir) + "/", gpu=False)
    raw = _bpreg_raw_scores(reference, CT)
    # Landmark scale: the first slices at 0 and a raw span of 5.0. Random weights give scores that
    # vary by only ~0.2 around ~0.5, and float32 convolutions (OpenVINO vs torch, different
    # accumulation order) differ by ~3e-6 raw; a trained model spans its whole raw range, which is
    # what 1e-4 on the 0..100 scale presumes. The expected slope equals the observed one, so the
    # tag is computed rather than "NONE" for an implausible z-spacing.
    low = float(raw[:10].mean())
    span = 5.0 if raw[-10:].mean() > low else -5.0
    transformed = (raw - low) * 100 / span
    slope = abs(np.polyfit(np.arange(len(raw)) * 3.0, transformed, 1)[0])
    write_model_dir(model_dir, state, raw_low=low, raw_high=low + span, slope_mean=float(slope))
    reference = InferenceModel(str(model_dir) + "/", gpu=False)
    expected = reference.nifti2json(str(CT))
    result = run(CT, root / "out", open_model_dir(model_dir), Options(precision=Precision.F32))
    ours = json.loads((root / "out" / "bpreg.json").read_text())
    return expected, ours, reference.model.state_dict(), state, result


def _as_array(values) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=float)


def test_bpreg_loaded_every_weight(both):
    _, _, loaded, saved, _ = both
    assert set(saved) <= set(loaded)
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key


def test_same_keys(both):
    expected, ours, *_ = both
    assert list(ours) == list(expected)


def test_scores_within_1e4(both):
    expected, ours, *_ = both
    for key in SCORE_KEYS:
        a, b = _as_array(expected[key]), _as_array(ours[key])
        assert a.shape == b.shape, key
        assert np.array_equal(np.isnan(a), np.isnan(b)), key
        assert np.nanmax(np.abs(a - b)) <= 1e-4, key
    cleaned = _as_array(expected["cleaned slice scores"])
    assert np.nanmax(cleaned) - np.nanmin(cleaned) > 1.0  # the curve is not flat


def test_same_tag_flags_and_regions(both):
    expected, ours, *_ = both
    for key in FLAG_KEYS:
        exp = expected[key]
        assert (None if isinstance(exp, float) and math.isnan(exp) else exp) == ours[key], key
    assert ours["body part examined"] == expected["body part examined"]
    assert ours["look-up table"] == expected["look-up table"]
    for key in SCALAR_KEYS:
        assert ours[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key


def test_settings_match_except_nan_as_null(both):
    expected, ours, *_ = both
    expected_settings = json.loads(json.dumps(expected["settings"]).replace("NaN", "null"))
    assert ours["settings"] == expected_settings


def stored_as(path: Path, target: Path, order: tuple[int, int, int], flip: tuple[int, ...] = ()) -> Path:
    """The same CT on the same patient grid, voxel axes stored in ``order`` and flipped along ``flip``."""
    import nibabel as nib

    image = nib.load(path)
    data, affine = np.asarray(image.dataobj), image.affine.copy()
    data = data.transpose(order)
    affine[:, :3] = affine[:, list(order)]
    for axis in flip:
        data = np.flip(data, axis)
        affine[:3, 3] += affine[:3, axis] * (data.shape[axis] - 1)
        affine[:3, axis] *= -1
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), target)
    return target


#: Storage orders where bpreg's feet-first test (the sign of ``affine[j, 2]``, ``j`` the voxel axis
#: nearest head-foot) agrees with the slice axis's own direction (``affine[2, j]``), so bpreg is the
#: reference: in-plane axes swapped; the slice axis swapped with an in-plane one (x, z, y and z, y, x
#: storage, both axes of the swap in the same direction); feet-first storage.
BPREG_ORDERS = [((1, 0, 2), ()), ((0, 2, 1), ()), ((0, 2, 1), (1, 2)), ((1, 0, 2), (2,)), ((2, 1, 0), (0, 2))]


def first_fast(cases: list[tuple]) -> list:
    """``make test`` runs the first case of an axis-order family (about 20 s each, bpreg beside us);
    ``make test-slow`` the others."""
    return [cases[0], *(pytest.param(*case, marks=pytest.mark.slow) for case in cases[1:])]


@pytest.mark.parametrize("order,flip", first_fast(BPREG_ORDERS))
def test_other_axis_orders_match_bpreg(both, tmp_path, order, flip):
    """bodypart accepts what bpreg accepts: volumes stored in another axis order, same scores as bpreg."""
    InferenceModel = import_inference_model()
    expected_json, _, _, _, result = both
    model_dir = result.qa["model"]["path"]
    volume = stored_as(CT, tmp_path / "reordered.nii.gz", order, flip)
    import nibabel as nib

    affine = nib.load(volume).affine
    j = int(np.argmax(np.abs(affine[:3, :3]), axis=0).tolist().index(2))
    assert np.sign(affine[j, 2]) == np.sign(affine[2, j]), "an order where bpreg's flip test reads another axis"
    expected = InferenceModel(str(model_dir) + "/", gpu=False).nifti2json(str(volume))
    run(volume, tmp_path / "out", open_model_dir(Path(model_dir)), Options(precision=Precision.F32))
    ours = json.loads((tmp_path / "out" / "bpreg.json").read_text())
    for key in ("cleaned slice scores", "unprocessed slice scores"):
        a, b = _as_array(expected[key]), _as_array(ours[key])
        assert a.shape == b.shape and np.nanmax(np.abs(a - b)) <= 1e-4, key
    assert ours["body part examined tag"] == expected["body part examined tag"]
    assert ours["reverse z-ordering"] == expected["reverse z-ordering"]


@pytest.mark.parametrize("order,flip", first_fast([((1, 2, 0), ()), ((2, 0, 1), ()), ((2, 0, 1), (0,)), ((1, 2, 0), (1, 2))]))
def test_three_cycle_orders_score_like_the_axial_original(both, tmp_path, order, flip):
    """PIR/ILA-like storage: bpreg's flip test reads another axis there (see bodypart/preprocess.py);
    ours scores the volume as the axial-stored volume with the same axis directions, slice for slice."""
    _, _, _, _, result = both
    model = open_model_dir(Path(result.qa["model"]["path"]))
    axial = stored_as(CT, tmp_path / "axial.nii.gz", (0, 1, 2), tuple(order[axis] for axis in flip))
    volume = stored_as(CT, tmp_path / "reordered.nii.gz", order, flip)
    scores = []
    for name, path in (("axial", axial), ("reordered", volume)):
        run(path, tmp_path / name, model, Options(precision=Precision.F32))
        scores.append(json.loads((tmp_path / name / "bpreg.json").read_text()))
    a, b = (_as_array(s["unprocessed slice scores"]) for s in scores)
    assert a.shape == b.shape and np.max(np.abs(a - b)) <= 1e-5
    assert scores[0]["reverse z-ordering"] == scores[1]["reverse z-ordering"]
