"""The repository's sample and test data (``data/``, see its README for provenance), read-only."""

from __future__ import annotations

from pathlib import Path

#: ``dev/mhub_cpu_dev/data.py`` → the repository's ``data/``.
DATA = Path(__file__).resolve().parents[2] / "data"
CT = DATA / "ct"
#: The sample CT (3 mm, 112 slices) as a DICOM series and as NIfTI.
SAMPLE_DICOM = CT / "abdomen_3mm_dicom"
SAMPLE_NIFTI = CT / "abdomen_3mm.nii.gz"
#: A real scanner series (JPEG 2000, blank UIDs inside the datasets).
SCANNER_DICOM = CT / "upper_abdomen_scanner_dicom"
