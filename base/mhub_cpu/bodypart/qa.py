"""Plain QA verdicts a pipeline can act on, derived from the score curve (qa.json)."""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import median_filter

from mhub_cpu.bodypart.modelfiles import BpregSettings
from mhub_cpu.bodypart.postprocess import ScoreCurve, landmark_present, landmark_score
from mhub_cpu.bodypart.tables import read_csv

JUMP_FACTOR = 4.0  # a step this many times the expected per-slice step is a jump
JUMP_MIN_SCORE = 5.0  # and at least this many score points
JUMP_MEDIAN_SLICES = 5  # steps are measured on a running median of the unprocessed scores


def yes_no(flag: float, yes_value: float) -> str:
    """"yes"/"no" for a 0/1 flag, "unknown" for NaN."""
    if flag is None or (isinstance(flag, float) and math.isnan(flag)):
        return "unknown"
    return "yes" if flag == yes_value else "no"


def dicom_term(tag: str) -> dict | None:
    """Body Part Examined (0018,0015) defined term and code for a bpreg tag (PS3.16 Annex L)."""
    for row in read_csv("body_part_examined_terms.csv"):
        if row["bpreg_tag"] == tag and row["dicom_defined_term"]:
            return {
                "defined_term": row["dicom_defined_term"],
                "code": {"value": row["code_value"], "scheme": row["coding_scheme"], "meaning": row["code_meaning"]},
            }
    return None


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def coverage_gaps(curve: ScoreCurve, settings: BpregSettings) -> list[dict]:
    """Unscored runs inside the volume and jumps in anatomy between neighbouring slices.

    * ``unscored``: slices the cleaning removed (empty slices, implausible tails);
    * ``jump``: the running median of the unprocessed scores moves by more than
      ``JUMP_FACTOR`` times the expected per-slice step (slope_mean x z-spacing) and at least
      ``JUMP_MIN_SCORE`` points between two neighbouring slices: anatomy is missing there.
    """
    gaps = [
        {"kind": "unscored", "first_slice": a, "last_slice": b}
        for a, b in _runs(np.isnan(curve.cleaned))
    ]
    if len(curve.unprocessed) > 1:
        smooth = median_filter(curve.unprocessed, size=min(JUMP_MEDIAN_SLICES, len(curve.unprocessed)), mode="nearest")
        expected = settings.slope_mean * curve.z_spacing
        limit = max(JUMP_FACTOR * expected, JUMP_MIN_SCORE)
        for i in np.flatnonzero(np.abs(np.diff(smooth)) > limit):
            gaps.append(
                {"kind": "jump", "first_slice": int(i), "last_slice": int(i) + 1, "score_step": float(smooth[i + 1] - smooth[i]), "expected_step": expected}
            )
    return gaps


def qa_verdicts(curve: ScoreCurve, bpreg: dict, settings: BpregSettings) -> dict:
    """Verdicts (README, "What each verdict means"): body part, slice order, z-spacing, coverage, gaps."""
    lookup = settings.lookuptable
    landmarks = sorted(
        (name for name in lookup if landmark_present(curve.cleaned, landmark_score(lookup, name))),
        key=lambda name: landmark_score(lookup, name),
    )
    regions = {
        region: {"slices": len(idx), "first_slice": int(idx[0]), "last_slice": int(idx[-1])}
        for region, idx in bpreg["body part examined"].items()
        if idx
    }
    tag = bpreg["body part examined tag"]
    reversed_order = yes_no(curve.reverse_z_ordering, 1.0)
    spacing_ok = yes_no(curve.valid_z_spacing, 1.0)
    gaps = coverage_gaps(curve, settings)
    problems = []
    if tag == "NONE":
        problems.append("body part not determined")
    if reversed_order != "no":
        problems.append(f"reversed slice order: {reversed_order}")
    if spacing_ok != "yes":
        problems.append(f"z-spacing plausible: {spacing_ok}")
    if any(g["kind"] == "jump" for g in gaps):
        problems.append("anatomy missing between slices")
    return {
        "body_part_examined": {"bpreg_tag": tag, "dicom": dicom_term(tag)},
        "reversed_slice_order": reversed_order,
        "z_spacing_plausible": spacing_ok,
        "z_spacing_mm": curve.z_spacing,
        "expected_z_spacing_mm": curve.expected_z_spacing,
        "landmarks_covered": landmarks,
        "regions_covered": regions,
        "gaps": gaps,
        "verdict": "pass" if not problems else "review",
        "problems": problems,
    }
