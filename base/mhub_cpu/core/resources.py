"""Where the engine's own files are: data tables, the demo model, INT8 calibration CT, MHub model folders.

They live in the repository beside the package (``configs/``, ``demo/``, ``models/``), which is
how the images install it (an editable install of the source tree). Environment variables point
elsewhere when needed: ``MHUB_CPU_CONFIGS`` for the tables, ``MHUB_CPU_MODELS`` for model folders.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The source tree: ``base/mhub_cpu/core/resources.py`` → the repository root.
REPO_ROOT = Path(__file__).resolve().parents[3]
#: The embedded demo segmentation model (trained on one CT; for demos and tests only).
DEMO_MODEL = "abdominal-organs-demo-v0.1.0.zip"
#: The default INT8 calibration CT (see ``configs/calibration/README.md``).
CALIBRATION_CT = "abdomen_3mm.nii.gz"


def configs_dir() -> Path:
    """The data tables: ``$MHUB_CPU_CONFIGS``, else the repository's ``configs/``."""
    return Path(os.environ.get("MHUB_CPU_CONFIGS") or REPO_ROOT / "configs")


def demo_model_path() -> Path:
    """The embedded demo model zip."""
    return REPO_ROOT / "demo" / DEMO_MODEL


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
