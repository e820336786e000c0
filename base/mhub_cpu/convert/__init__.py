"""Conversion to cached OpenVINO IR and INT8 quantisation: the only package that imports torch, MONAI or NNCF."""
