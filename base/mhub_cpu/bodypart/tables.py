"""Data tables under ``configs/bodypart/`` (body-part rules, DICOM terms, IDC SR codes)."""

from __future__ import annotations

import csv
import json
from functools import lru_cache
from pathlib import Path

TABLES_DIR = Path(__file__).resolve().parents[3] / "configs" / "bodypart"


@lru_cache(maxsize=None)
def postprocessing() -> dict:
    """bpreg 1.1.0 post-processing defaults (``bpreg_postprocessing.json``)."""
    return json.loads((TABLES_DIR / "bpreg_postprocessing.json").read_text())


@lru_cache(maxsize=None)
def read_csv(name: str) -> tuple[dict[str, str], ...]:
    """Rows of a CSV table, as dicts keyed by the header."""
    with open(TABLES_DIR / name, newline="") as handle:
        return tuple(csv.DictReader(handle))


@lru_cache(maxsize=None)
def idc_codes() -> dict:
    """IDC's BPR landmark/region codes (``idc_bpr_codes.json``, generated from IDC's tables)."""
    return json.loads((TABLES_DIR / "idc_bpr_codes.json").read_text())
