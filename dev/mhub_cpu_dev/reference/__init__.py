"""The reference: the Slicer MONAIAuto3DSeg inference script's behaviour in MONAI + PyTorch fp32."""
