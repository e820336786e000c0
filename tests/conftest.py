"""Shared fixtures: paths to the shared data, an isolated model cache, the demo model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CT_DICOM = SHARED / "ct" / "abdomen_3mm_dicom"
CT_NIFTI = SHARED / "ct" / "abdomen_3mm.nii.gz"
CT_REFERENCE_LABELS = SHARED / "ct" / "abdomen_3mm_totalseg_labels.nii.gz"
SCANNER_DICOM = SHARED / "ct" / "upper_abdomen_scanner_dicom"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point the model/IR cache at a per-session folder so tests never touch the user's cache."""
    cache = tmp_path_factory.mktemp("mhub-cpu-cache")
    os.environ["MHUB_CPU_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def demo_model() -> Path:
    from mhub_cpu.auto3dseg.catalog import demo_model_path

    path = demo_model_path()
    assert path.exists(), f"demo model missing: {path} (run demo/train_demo_model.py)"
    return path


def copy_series(source: Path, target: Path, **overrides: object) -> list[Path]:
    """Copy a DICOM series, optionally overriding attributes in every file; returns the new files."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.iterdir()):
        dataset = pydicom.dcmread(path)
        for keyword, value in overrides.items():
            setattr(dataset, keyword, value)
        out = target / path.name
        dataset.save_as(out, enforce_file_format=True)
        written.append(out)
    return written


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)
