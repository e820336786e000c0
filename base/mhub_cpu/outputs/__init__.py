"""Result files: DICOM-SEG, NIfTI label map, PNG preview and JSON report."""
