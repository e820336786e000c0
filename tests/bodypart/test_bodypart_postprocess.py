"""Golden tests of the post-processing on hand-made score curves (no network involved)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mhub_cpu.bodypart.modelfiles import BpregSettings
from mhub_cpu.bodypart.outputs import bpreg_result
from mhub_cpu.bodypart.postprocess import body_part_tag, score_curve
from mhub_cpu.bodypart.qa import coverage_gaps, dicom_term, qa_verdicts
from mhub_cpu.core.files import strict
from mhub_cpu_dev.standins.bodypart import LANDMARK_MEANS, inference_settings


def settings(slope_mean: float = 0.118) -> BpregSettings:
    raw = inference_settings(0.0, 100.0, slope_mean)
    tables = raw["lookuptable_train_val"]
    return BpregSettings(tables["original"], tables["transformed"], "pelvis_start", "eyes_end", slope_mean, -0.037, 0.25)


def ramp(start: float, stop: float, z_spacing: float = 5.0) -> tuple[np.ndarray, float]:
    """Raw scores rising at the expected slope (0.118 per mm) from ``start`` to ``stop``."""
    n = int(round((stop - start) / (0.118 * z_spacing))) + 1
    return start + np.arange(n) * 0.118 * z_spacing, z_spacing


def tag_of(raw: np.ndarray, z: float) -> str:
    s = settings()
    return body_part_tag(score_curve(raw, z, s), s.lookuptable)


def test_plausible_ramp_is_in_order_and_spacing_valid():
    raw, z = ramp(20, 60)
    curve = score_curve(raw, z, settings())
    assert curve.reverse_z_ordering == 0.0
    assert curve.valid_z_spacing == 1.0
    assert curve.slope == pytest.approx(0.118, rel=0.02)
    assert curve.expected_z_spacing == pytest.approx(z, rel=0.02)


def test_reversed_order_is_flagged():
    raw, z = ramp(20, 60)
    curve = score_curve(raw[::-1], z, settings())
    assert curve.reverse_z_ordering == 1.0
    assert curve.valid_z_spacing == 1.0  # the magnitude of the slope is still right


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_implausible_spacing_gives_none(factor):
    raw, z = ramp(20, 60)
    curve = score_curve(raw, z * factor, settings())  # header spacing wrong by the factor
    assert curve.valid_z_spacing == 0.0
    assert curve.expected_z_spacing == pytest.approx(z, rel=0.05)
    s = settings()
    assert body_part_tag(curve, s.lookuptable) == "NONE"
    assert body_part_tag(curve, s.lookuptable, ignore_invalid_z=True) == "ABDOMEN"  # L5..Th9 all covered


def test_spacing_threshold_is_28_percent():
    raw, z = ramp(20, 60)
    assert score_curve(raw, z * 0.8, settings()).valid_z_spacing == 1.0  # ratio 1.25
    assert score_curve(raw, z * 0.75, settings()).valid_z_spacing == 0.0  # ratio 1.33


def test_single_slice_has_no_slope():
    curve = score_curve(np.array([40.0]), 5.0, settings())
    assert math.isnan(curve.slope) and math.isnan(curve.valid_z_spacing)
    assert strict(bpreg_result(curve, settings()))["observed slope"] is None


# Tag boundaries: each volume spans from just below to just above a set of landmarks.
@pytest.mark.parametrize(
    "start, stop, tag",
    [
        (-5, 27, "PELVIS"),  # pelvis_start, femur_end (2 of 3 landmarks)
        (-5, 12, "PELVIS"),  # only pelvis_start: too few landmarks -> most frequent slice part
        (24, 56, "ABDOMEN"),  # L5..Th9 (9 landmarks), not enough chest landmarks
        (-5, 56, "ABDOMEN-PELVIS"),
        (43, 77, "CHEST"),  # Th12..Th1
        (24, 77, "CHEST-ABDOMEN"),
        (-5, 77, "CHEST-ABDOMEN-PELVIS"),
        (70, 88, "NECK"),  # Th3..C2
        (43, 88, "NECK-CHEST"),
        (24, 88, "NECK-CHEST-ABDOMEN"),
        (-5, 88, "NECK-CHEST-ABDOMEN-PELVIS"),
        (85, 101, "HEAD"),  # C3, C2, C1, eyes_end
        (70, 101, "HEAD-NECK"),
        (43, 101, "HEAD-NECK-CHEST"),
        (-5, 101, "HEAD-NECK-CHEST-ABDOMEN-PELVIS"),
    ],
)
def test_body_part_tag_boundaries(start, stop, tag):
    raw, z = ramp(start, stop, z_spacing=2.0)
    assert tag_of(raw, z) == tag


def test_abdomen_needs_seven_landmarks():
    # L5 (25.5) .. L1 (41.5): five abdominal landmarks, a long volume: falls back to the part most slices lie in
    raw, z = ramp(24, 43, z_spacing=1.0)
    assert len(raw) * z >= 100
    assert tag_of(raw, z) == "ABDOMEN"
    raw, z = ramp(24, 48.5, z_spacing=1.0)  # + Th12, Th11 = 7 landmarks
    assert tag_of(raw, z) == "ABDOMEN"


def test_short_volume_uses_most_frequent_part():
    raw, z = ramp(56, 62, z_spacing=1.0)  # 51 mm < 100 mm, covers Th8, Th7 only
    assert tag_of(raw, z) == "CHEST"  # Th9 (53.99) < score < Th2 (73.4) is CHEST in the distinct table


def test_background_slices_are_unscored_gaps():
    raw, z = ramp(20, 60)
    raw[10:13] = 110.83  # bpreg's empty-slice prediction
    curve = score_curve(raw, z, settings())
    assert np.isnan(curve.cleaned[10:13]).all() and not np.isnan(curve.cleaned[9]) and not np.isnan(curve.cleaned[13])
    gaps = coverage_gaps(curve, settings())
    assert {"kind": "unscored", "first_slice": 10, "last_slice": 12} in gaps


def test_missing_anatomy_is_a_jump():
    raw, z = ramp(20, 60)
    raw[30:] += 15.0  # 15 points of anatomy missing between slices 29 and 30
    curve = score_curve(raw, z, settings())
    jumps = [g for g in coverage_gaps(curve, settings()) if g["kind"] == "jump"]
    assert len(jumps) == 1 and jumps[0]["first_slice"] == 29 and jumps[0]["score_step"] == pytest.approx(15 + 0.59, abs=0.01)
    assert coverage_gaps(score_curve(ramp(20, 60)[0], z, settings()), settings()) == []


def test_outlier_tail_beyond_boundary_is_removed():
    raw, z = ramp(-5, 105, z_spacing=5.0)
    raw = np.concatenate([raw, np.full(8, 20.0)])  # 8 slices of garbage beyond head_end
    curve = score_curve(raw, z, settings())
    assert np.isnan(curve.cleaned[-8:]).all()  # from the first implausible slope to the end
    first_nan = int(np.flatnonzero(np.isnan(curve.cleaned))[0])
    assert len(raw) - 8 - 8 <= first_nan <= len(raw) - 8  # within the reach of the smoothing (4 sigma)
    assert not np.isnan(curve.cleaned[:first_nan]).any()


def test_qa_verdicts_and_dicom_terms():
    s = settings()
    raw, z = ramp(24, 77, z_spacing=2.0)
    curve = score_curve(raw, z, s)
    qa = qa_verdicts(curve, bpreg_result(curve, s), s)
    assert qa["body_part_examined"] == {"bpreg_tag": "CHEST-ABDOMEN", "dicom": dicom_term("CHEST-ABDOMEN")}
    assert qa["body_part_examined"]["dicom"]["defined_term"] == "CHESTABDOMEN"
    assert (qa["reversed_slice_order"], qa["z_spacing_plausible"], qa["verdict"]) == ("no", "yes", "pass")
    assert "L1" in qa["landmarks_covered"] and "pelvis_start" not in qa["landmarks_covered"]
    assert qa["landmarks_covered"] == sorted(qa["landmarks_covered"], key=LANDMARK_MEANS.get)
    assert set(qa["regions_covered"]) == {"pelvis", "abdomen", "chest", "shoulder-neck"}
    reversed_qa = qa_verdicts(score_curve(raw[::-1], z, s), bpreg_result(score_curve(raw[::-1], z, s), s), s)
    assert (reversed_qa["reversed_slice_order"], reversed_qa["verdict"]) == ("yes", "review")
    assert dicom_term("HEAD-NECK-CHEST") is None and dicom_term("NONE") is None


def test_strict_json_has_no_nan():
    raw, z = ramp(20, 60)
    raw[:3] = 110.83
    curve = score_curve(raw, z, settings())
    payload = strict(bpreg_result(curve, settings()))
    assert payload["cleaned slice scores"][:3] == [None, None, None]
    assert payload["settings"]["body part examined dict"]["legs"] == [None, "pelvis_start"]
