"""Auto3DSeg inference: preprocessing faithful to the Slicer script, sliding window on OpenVINO."""
