"""The bpreg network in plain torch, used only to convert the public weights to OpenVINO IR.

bpreg builds it from torchvision's VGG16 feature extractor with a one-channel, bias-free first
convolution, then a 1x1 convolution, ReLU, global mean and one linear unit. The attribute names
here reproduce bpreg's ``state_dict`` keys (``model.<i>.*``, ``conv6.*``, ``fc7.*``) so that
``model.pt`` loads with ``strict=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from mhub_cpu.core.errors import ModelError

# VGG16 configuration "D": channels per 3x3 convolution, "M" for 2x2 max pooling.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


def vgg16_features() -> nn.Sequential:
    """VGG16 convolutional trunk (Conv-ReLU blocks and max pooling) for one-channel input."""
    layers: list[nn.Module] = []
    in_channels = 1
    for index, item in enumerate(VGG16_LAYOUT):
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1, bias=index != 0))
        layers.append(nn.ReLU(inplace=True))
        in_channels = int(item)
    return nn.Sequential(*layers)


class BodyPartRegressionNet(nn.Module):
    """Maps a batch of 128x128 slices (N, 1, 128, 128), scaled to [-1, 1], to raw scores (N, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = vgg16_features()
        self.conv6 = nn.Conv2d(512, 512, kernel_size=1)
        self.fc7 = nn.Linear(512, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv6(self.model(x)))
        return self.fc7(x.mean(dim=(2, 3)))


def load_network(weights_path: str) -> BodyPartRegressionNet:
    """Build the network and load bpreg's ``model.pt`` state_dict strictly (every key must match).

    The file is unpickled with PyTorch's restricted unpickler (tensors and plain containers only).

    Raises:
        ModelError: the file is not a state_dict of tensors, or a tensor holds NaN or infinite
            values (named: such weights would score every slice NaN, and the QA would blame the CT).
        RuntimeError: the keys or shapes do not match the network.
    """
    import pickle

    net = BodyPartRegressionNet()
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"{weights_path} holds more than tensors, and unpickling it could run code from the file, "
                         f"so it is refused: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{weights_path} is not a state_dict (a mapping of tensor names to tensors)")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelError(f"{weights_path}: the weights are broken: {name} holds {bad} NaN or infinite values "
                             f"of {tensor.numel()}")
    net.load_state_dict(state, strict=True)
    return net.eval()
