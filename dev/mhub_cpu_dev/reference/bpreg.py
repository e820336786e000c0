"""bpreg 1.1.0 itself, as reference for the parity test and the benchmark.

bpreg is installed with ``pip install --no-deps bpreg==1.1.0`` beside torch 2.x (see Makefile).

Stubbed, because they cannot be installed here or are gone from current releases, and bpreg's
inference path (``InferenceModel.nifti2json``) never calls into them:

* ``torchvision`` (``models``, ``transforms``): torchvision from PyPI does not work with this
  torch. bpreg calls ``torchvision.models.vgg16(pretrained=False).features`` to build its
  backbone, so the stub returns an object whose ``features`` is VGG16's convolutional trunk,
  written out here independently of ``mhub_cpu.convert.bodypart_network`` (the code under test);
  ``transforms.Compose`` is only used to hold training augmentations.
* ``imgaug``, ``skimage``: imported by albumentations 0.5.2 for transforms inference never uses.
* ``numpy.lib.arraysetops``: removed in numpy 2; imported by bpreg's training dataset module.
* ``requests``: only used to download the default model; tests pass a local model directory.

``pytorch_lightning`` is the real package (bpreg's model derives from ``LightningModule``); it is
imported before the torchvision stub so that it does not mistake the stub for torchvision.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import numpy as np
from torch import nn


def _stub(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def _vgg16(pretrained: bool = False) -> types.SimpleNamespace:
    assert not pretrained, "bpreg's inference builds VGG16 without ImageNet weights"
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, channels = [], 3
    for v in cfg:
        if v == "M":
            layers += [nn.MaxPool2d(2, 2)]
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return types.SimpleNamespace(features=nn.Sequential(*layers), to=lambda device: None)


def import_inference_model():
    """bpreg's ``InferenceModel`` class, with the stubs above installed."""
    import pytorch_lightning  # noqa: F401  (real package, before the torchvision stub)

    if "torchvision" not in sys.modules:
        tv = _stub("torchvision")
        tv.models = _stub("torchvision.models", vgg16=_vgg16)
        tv.transforms = _stub("torchvision.transforms", Compose=lambda transforms: transforms)
        ia = _stub("imgaug")
        ia.augmenters = _stub("imgaug.augmenters")
        sk = _stub("skimage")
        sk.exposure = _stub("skimage.exposure", match_histograms=None)
        sk.measure = _stub("skimage.measure", label=None)
        _stub("numpy.lib.arraysetops", isin=np.isin)
        _stub("requests")
    from bpreg.inference.inference_model import InferenceModel

    return InferenceModel
