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
