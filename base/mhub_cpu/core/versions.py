"""``report.json``: what ran, on what, with which settings, how long each stage took."""

from __future__ import annotations

import platform
from importlib import metadata

#: Packages whose versions are recorded.
RECORDED_PACKAGES = ("mhub-cpu", "openvino", "numpy", "nibabel", "pydicom", "highdicom", "dcm2niix")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions
