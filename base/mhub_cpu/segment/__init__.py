"""The segmentation job: CT → preprocessing → sliding window on OpenVINO → label map → DICOM-SEG."""
