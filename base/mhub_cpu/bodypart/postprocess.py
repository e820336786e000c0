"""From raw network outputs to bpreg's slice-score curve, sanity flags and body-part tags.

Same rules as bpreg 1.1.0 (``Scores``, ``BodyPartExaminedDict``, ``BodyPartExaminedTag``):

1. raw scores are mapped linearly so that the start landmark (pelvis_start) is 0 and the end
   landmark (eyes_end) is 100 ("unprocessed slice scores");
2. slices whose raw score rounds to a known empty-slice prediction become NaN, the rest are
   Gaussian-smoothed (sigma 10 mm, over the non-NaN slices only);
3. the slices nearest to score 0 and 100 (if within 10) bound the anatomy; beyond them, runs
   whose slice-to-slice slope leaves the valid tangential range are set to NaN ("cleaned");
4. a line fitted to the cleaned scores against z (mm) gives the observed slope; its ratio to the
   expected slope flags an implausible z-spacing (|1 - ratio| > 0.28), a negative slope a reversed
   slice order;
5. body parts come from landmark scores in the model's look-up table.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from mhub_cpu.bodypart.modelfiles import BpregSettings
from mhub_cpu.bodypart.tables import postprocessing

SCALE = 100.0
PART_ORDER = ("HEAD", "NECK", "CHEST", "ABDOMEN", "PELVIS")  # head to feet


@dataclass
class ScoreCurve:
    """Slice scores of one volume (bpreg order: index 0 nearest the feet if the header is right)."""

    raw: np.ndarray
    unprocessed: np.ndarray
    cleaned: np.ndarray
    z: np.ndarray
    z_spacing: float
    slope: float
    slope_unprocessed: float
    expected_slope: float
    slope_ratio: float
    expected_z_spacing: float
    valid_z_spacing: float  # 1.0, 0.0 or NaN (too few scored slices)
    reverse_z_ordering: float  # 1.0 or 0.0
    settings: dict


def to_landmark_scale(values: np.ndarray, settings: BpregSettings) -> np.ndarray:
    """Map raw scores so that the start landmark is 0 and the end landmark 100."""
    low, high = settings.transform_min, settings.transform_max
    return (values - low) * SCALE / (high - low)


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept; NaN for fewer than two points."""
    if len(x) < 2:
        return math.nan, math.nan
    design = np.column_stack([np.ones(len(x)), x])
    intercept, slope = np.linalg.solve(design.T @ design, design.T @ y)
    return float(slope), float(intercept)


def _nearest_index(values: np.ndarray, target: float, tolerance: float) -> float:
    distance = np.abs(values - target)
    if np.all(np.isnan(distance)) or np.nanmin(distance) >= tolerance:
        return math.nan
    return float(np.nanargmin(distance))


def _remove_outlier_tails(
    values: np.ndarray, z_spacing: float, slope_unprocessed: float, bounds: tuple[float, float], settings: BpregSettings
) -> np.ndarray:
    """NaN out the tails (beyond the 0/100 boundary slices) that contain implausible slopes."""
    if len(values) < 2:
        return values
    steps = np.diff(values)
    slopes = np.append(steps, steps[-1]) / z_spacing
    outliers = np.flatnonzero((slopes < settings.tangential_slope_min) | (slopes > settings.tangential_slope_max))
    low_idx, high_idx = bounds
    # Which boundary lies at the start of the array depends on the direction of the raw curve.
    first, last = (low_idx, high_idx) if slope_unprocessed > 0 else (high_idx, low_idx)
    head = outliers[outliers < first] if not math.isnan(first) else outliers[:0]
    tail = outliers[outliers > last] if not math.isnan(last) else outliers[:0]
    values = values.copy()
    if len(head):
        values[: head.max()] = np.nan
    if len(tail):
        values[tail.min() :] = np.nan
    return values


def score_curve(raw: np.ndarray, z_spacing: float, settings: BpregSettings) -> ScoreCurve:
    """Post-process raw network scores of consecutive slices ``z_spacing`` mm apart."""
    table = postprocessing()
    raw = np.asarray(raw, dtype=np.float64)
    unprocessed = to_landmark_scale(raw, settings)
    slope_unprocessed, _ = fit_line(np.arange(len(raw), dtype=float), unprocessed)

    filtered = raw.copy()
    filtered[np.isin(np.round(filtered, 2), table["background_scores"])] = np.nan
    values = to_landmark_scale(filtered, settings)
    finite = ~np.isnan(values)
    if finite.any():
        values[finite] = gaussian_filter(values[finite], sigma=table["smoothing_sigma_mm"] / z_spacing)

    tolerance = table["boundary_tolerance"]
    low_idx, high_idx = _nearest_index(values, 0.0, tolerance), _nearest_index(values, SCALE, tolerance)
    if low_idx > high_idx:
        low_idx = math.nan
    cleaned = _remove_outlier_tails(values, z_spacing, slope_unprocessed, (low_idx, high_idx), settings)

    z = np.arange(len(raw)) * z_spacing
    valid = ~np.isnan(cleaned)
    slope, _ = fit_line(z[valid], cleaned[valid])
    ratio = abs(slope) / settings.slope_mean
    if math.isnan(ratio):
        valid_z = math.nan
    else:
        valid_z = 0.0 if abs(1 - ratio) > table["r_slope_threshold"] else 1.0
    return ScoreCurve(
        raw=raw,
        unprocessed=unprocessed,
        cleaned=cleaned,
        z=z,
        z_spacing=float(z_spacing),
        slope=slope,
        slope_unprocessed=slope_unprocessed,
        expected_slope=settings.slope_mean,
        slope_ratio=ratio,
        expected_z_spacing=slope * z_spacing / settings.slope_mean,
        valid_z_spacing=valid_z,
        reverse_z_ordering=1.0 if slope < 0 else 0.0,
        settings={
            "transform_min": settings.transform_min,
            "transform_max": settings.transform_max,
            "slope_mean": settings.slope_mean,
            "tangential_slope_min": settings.tangential_slope_min,
            "tangential_slope_max": settings.tangential_slope_max,
            "r_slope_threshold": table["r_slope_threshold"],
            "smoothing_sigma": table["smoothing_sigma_mm"],
            "background_scores": table["background_scores"],
        },
    )


def landmark_score(lookuptable: dict, name: str | None) -> float:
    """Expected 0..100 score of a landmark (NaN for an open end)."""
    return math.nan if name is None else float(lookuptable[name]["mean"])


def body_part_slices(cleaned: np.ndarray, lookuptable: dict) -> dict[str, list[float]]:
    """Indices of the slices in each region of bpreg's body-part dict (lower bound inclusive).

    Returns floats, as bpreg writes them.
    """
    result = {}
    for part, (start, end) in postprocessing()["body_parts"].items():
        low, high = landmark_score(lookuptable, start), landmark_score(lookuptable, end)
        with np.errstate(invalid="ignore"):
            if math.isnan(low):
                inside = cleaned < high
            elif math.isnan(high):
                inside = cleaned > low
            else:
                inside = (cleaned >= low) & (cleaned < high)
        result[part] = [float(i) for i in np.flatnonzero(inside)]
    return result


def landmark_present(cleaned: np.ndarray, score: float) -> bool:
    """A landmark is covered when some slices score below it and some above."""
    with np.errstate(invalid="ignore"):
        return bool(np.any(cleaned < score) and np.any(cleaned > score))


def _span(parts: list[str]) -> str:
    ordered = [p for p in PART_ORDER if p in parts]
    first, last = PART_ORDER.index(ordered[0]), PART_ORDER.index(ordered[-1])
    return "-".join(PART_ORDER[first : last + 1])


def body_part_tag(curve: ScoreCurve, lookuptable: dict, ignore_invalid_z: bool = False) -> str:
    """bpreg's "body part examined tag", e.g. "CHEST-ABDOMEN"; "NONE" when it cannot tell.

    A body part counts when at least its minimum number of landmarks are covered; the tag spans
    the most cranial to the most caudal part found. Volumes shorter than 100 mm, or where no part
    reaches its minimum, get the part most slices fall into. An implausible z-spacing gives "NONE".
    """
    table = postprocessing()
    if curve.valid_z_spacing == 0 and not ignore_invalid_z:
        return "NONE"
    found = [
        part
        for part, names in table["body_parts_included"].items()
        if sum(landmark_present(curve.cleaned, landmark_score(lookuptable, n)) for n in names)
        >= table["min_present_landmarks"][part]
    ]
    if found and len(curve.raw) * curve.z_spacing >= table["zrange_threshold_mm"]:
        return _span(found)
    per_slice = []
    for score in curve.cleaned:
        for part, (start, end) in table["distinct_body_parts"].items():
            if landmark_score(lookuptable, start) < score < landmark_score(lookuptable, end):
                per_slice.append(part)
    return Counter(per_slice).most_common(1)[0][0] if per_slice else "NONE"
