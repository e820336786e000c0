"""Where the engine's own files are: data tables, the demo model, INT8 calibration CT, the sample CT,
MHub model folders.

They are package data (``mhub_cpu._data``), found through the import system, so that an installed
wheel finds them wherever it lies: ``mhub_cpu._data.configs`` and ``mhub_cpu._data.demo`` are the
repository's top-level ``configs/`` and ``demo/`` (mapped by ``[tool.setuptools] package-dir``,
resolved there by an editable install), the sample CT series lies in ``base/mhub_cpu/_data/sample/``.
A source tree used without any install (``PYTHONPATH=base``) falls back on the repository's folders.
Environment variables point elsewhere when needed: ``MHUB_CPU_CONFIGS`` for the tables,
``MHUB_CPU_MODELS`` for model folders. Files are read in place: a zipped install is not supported.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
from pathlib import Path

#: The source tree: ``base/mhub_cpu/core/resources.py`` → the repository root (meaningful in a checkout only).
REPO_ROOT = Path(__file__).resolve().parents[3]
#: The embedded demo segmentation model (trained on one CT; for demos and tests only).
DEMO_MODEL = "abdominal-organs-demo-v0.1.0.zip"
#: The default INT8 calibration CT (see ``configs/calibration/README.md``), also the sample CT as NIfTI.
CALIBRATION_CT = "abdomen_3mm.nii.gz"
#: The sample CT as a DICOM series (the same CT as ``CALIBRATION_CT``), which ``mhub-cpu demo`` segments.
SAMPLE_DICOM = "abdomen_3mm_dicom"


def _data_folder(name: str) -> Path:
    """The folder of the data-only package ``mhub_cpu._data.<name>`` (no ``__init__``: a namespace
    package, whose spec lists its folder), else the repository's top-level ``<name>/``."""
    spec = importlib.util.find_spec(f"mhub_cpu._data.{name}")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else REPO_ROOT / name


def configs_dir() -> Path:
    """The data tables: ``$MHUB_CPU_CONFIGS``, else the packaged ``configs/``."""
    explicit = os.environ.get("MHUB_CPU_CONFIGS")
    return Path(explicit) if explicit else _data_folder("configs")


def demo_model_path() -> Path:
    """The embedded demo model zip."""
    return _data_folder("demo") / DEMO_MODEL


def sample_dicom() -> Path:
    """The sample CT series shipped with the engine (112 slices, 3 mm; see ``data/README.md``)."""
    return Path(str(importlib.resources.files("mhub_cpu._data"))) / "sample" / SAMPLE_DICOM


def sample_nifti() -> Path:
    """The sample CT as NIfTI: the calibration CT of the packaged tables (not ``$MHUB_CPU_CONFIGS``)."""
    return _data_folder("configs") / "calibration" / CALIBRATION_CT


def calibration_images() -> list[Path]:
    """The default INT8 calibration CT (one NIfTI file shipped with the engine)."""
    return [configs_dir() / "calibration" / CALIBRATION_CT]


def models_root() -> Path:
    """MHub model folders: ``$MHUB_CPU_MODELS``, else the repository's ``models/``, else ``/app/models``
    (inside an MHub image)."""
    explicit = os.environ.get("MHUB_CPU_MODELS")
    if explicit:
        return Path(explicit)
    repo_models = REPO_ROOT / "models"
    return repo_models if repo_models.is_dir() else Path("/app/models")


def mhubio_python() -> Path:
    """The Python of mhubio's own environment: ``$MHUB_CPU_MHUBIO_PYTHON``, else the repository's
    ``.venv-mhub`` (``make`` installs MHub's production mhubio there)."""
    return Path(os.environ.get("MHUB_CPU_MHUBIO_PYTHON") or REPO_ROOT / ".venv-mhub" / "bin" / "python")
