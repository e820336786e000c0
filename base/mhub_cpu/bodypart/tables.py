"""Data tables under ``configs/bodypart/`` (body-part rules, DICOM terms, IDC SR codes)."""

from __future__ import annotations

import csv
import json
from functools import cache
from pathlib import Path

from mhub_cpu.core.resources import configs_dir


def tables_dir() -> Path:
    return configs_dir() / "bodypart"


@cache
def postprocessing() -> dict:
    """bpreg 1.1.0 post-processing defaults (``bpreg_postprocessing.json``)."""
    return json.loads((tables_dir() / "bpreg_postprocessing.json").read_text())


@cache
def read_csv(name: str) -> tuple[dict[str, str], ...]:
    """Rows of a CSV table, as dicts keyed by the header."""
    with open(tables_dir() / name, newline="") as handle:
        return tuple(csv.DictReader(handle))


@cache
def idc_codes() -> dict:
    """IDC's BPR landmark/region codes (``idc_bpr_codes.json``, generated from IDC's tables)."""
    return json.loads((tables_dir() / "idc_bpr_codes.json").read_text())
