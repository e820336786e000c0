"""bpreg.json (bpreg's nifti2json keys; written as strict JSON) and landmark cropping."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np

from mhub_cpu.bodypart.modelfiles import BpregSettings
from mhub_cpu.bodypart.postprocess import ScoreCurve, body_part_slices, body_part_tag, landmark_present, landmark_score
from mhub_cpu.bodypart.preprocess import Orientation
from mhub_cpu.bodypart.tables import postprocessing
from mhub_cpu.core.errors import InputError


def bpreg_result(curve: ScoreCurve, settings: BpregSettings, ignore_invalid_z: bool = False) -> dict:
    """The dict bpreg's ``InferenceModel.nifti2json`` returns, key for key (NaN still as float)."""
    table = postprocessing()
    cleaned = curve.cleaned
    return {
        "cleaned slice scores": [float(v) for v in cleaned],
        "z": [float(v) for v in curve.z],
        "unprocessed slice scores": [float(v) for v in curve.unprocessed],
        "body part examined": body_part_slices(cleaned, settings.lookuptable),
        "body part examined tag": body_part_tag(curve, settings.lookuptable, ignore_invalid_z),
        "look-up table": settings.lookuptable,
        "reverse z-ordering": curve.reverse_z_ordering,
        "valid z-spacing": curve.valid_z_spacing,
        "expected slope": curve.expected_slope,
        "observed slope": curve.slope,
        "slope ratio": curve.slope_ratio,
        "expected z-spacing": curve.expected_z_spacing,
        "z-spacing": curve.z_spacing,
        "settings": {
            "slice score processing": curve.settings,
            "body part examined dict": {k: [math.nan if v is None else v for v in pair] for k, pair in table["body_parts"].items()},
            "body part examined tag": {
                "body parts included": table["body_parts_included"],
                "distinct body parts": table["distinct_body_parts"],
                "min present landmarks": table["min_present_landmarks"],
            },
        },
    }


def crop_range(curve: ScoreCurve, lookuptable: dict, start: str, end: str) -> tuple[int, int]:
    """First and last slice (bpreg order) whose cleaned score lies between two landmarks.

    Raises:
        InputError: unknown landmark, or no slice scores between them.
    """
    for name in (start, end):
        if name not in lookuptable:
            raise InputError(f"unknown landmark {name!r}; known: {', '.join(lookuptable)}")
    low, high = sorted((landmark_score(lookuptable, start), landmark_score(lookuptable, end)))
    with np.errstate(invalid="ignore"):
        inside = np.flatnonzero((curve.cleaned >= low) & (curve.cleaned <= high))
    if len(inside) == 0:
        covered = [n for n in (start, end) if landmark_present(curve.cleaned, landmark_score(lookuptable, n))]
        raise InputError(
            f"no slice scores between {start} and {end} (landmarks inside the volume: {', '.join(covered) or 'neither'})"
        )
    return int(inside.min()), int(inside.max())


def write_crop(image: nib.Nifti1Image, orient: Orientation, first: int, last: int, path: Path) -> None:
    """Save the slab between two bpreg-order slices as NIfTI, geometry kept (affine shifted)."""
    stored = sorted((int(orient.stored_index(first)), int(orient.stored_index(last))))
    window: list[slice] = [slice(None)] * 3
    window[orient.slice_axis] = slice(stored[0], stored[1] + 1)
    cropped = image.slicer[tuple(window)]
    nib.save(cropped, path)
