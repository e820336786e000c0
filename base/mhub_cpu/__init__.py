"""mhub-cpu: CPU-friendly medical imaging models (Auto3DSeg on OpenVINO, Body Part Regression)."""

__version__ = "0.1.0"
