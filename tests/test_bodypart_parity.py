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

from mhub_cpu.bodypart.reference import import_inference_model
from mhub_cpu.bodypart.random_model import random_state_dict, write_model_dir
from mhub_cpu.bodypart.modelfiles import open_model_dir
from mhub_cpu.bodypart.pipeline import Options, run

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
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
    result = run(CT, root / "out", open_model_dir(model_dir), Options(precision="f32"))
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
