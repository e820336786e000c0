"""``report.json``: what ran, on what, with which settings, how long each stage took."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

#: Packages whose versions are recorded.
RECORDED_PACKAGES = ("mhub-cpu", "openvino", "numpy", "nibabel", "pydicom", "highdicom", "dcm2niix", "SimpleITK")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def write_json(data: Any, path: Path) -> None:
    """Write strict JSON (no NaN/Infinity) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    partial.replace(path)
