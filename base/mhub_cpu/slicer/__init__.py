"""3D Slicer's MONAIAuto3DSeg extension on our OpenVINO pipeline: its inference script's arguments, NRRD in and out."""
