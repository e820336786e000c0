"""Conversion of Auto3DSeg PyTorch checkpoints to cached OpenVINO IR (the only place torch is used)."""

from .checkpoint import load_checkpoint
from .openvino_ir import IR_VARIANTS, ConvertedModel, convert_bundle, network_from_config

__all__ = ["IR_VARIANTS", "ConvertedModel", "convert_bundle", "load_checkpoint", "network_from_config"]
