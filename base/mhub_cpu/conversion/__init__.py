"""Conversion of Auto3DSeg PyTorch checkpoints to cached OpenVINO IR (the only place torch is used)."""

from .openvino_ir import IR_VARIANTS, ConvertedModel, convert_bundle, load_checkpoint, network_from_config

__all__ = ["IR_VARIANTS", "ConvertedModel", "convert_bundle", "load_checkpoint", "network_from_config"]
