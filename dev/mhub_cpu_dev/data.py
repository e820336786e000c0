"""The project's shared sample data beside the repository (``../shared/data``), read-only."""

from __future__ import annotations

from pathlib import Path

#: ``dev/mhub_cpu_dev/shared.py`` → the folder holding the repository and ``shared/``.
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SHARED_CT = SHARED_DATA / "ct"
#: The sample CT (3 mm, 112 slices) as a DICOM series and as NIfTI.
SAMPLE_DICOM = SHARED_CT / "abdomen_3mm_dicom"
SAMPLE_NIFTI = SHARED_CT / "abdomen_3mm.nii.gz"
