"""The network's class head, split off so that a window's class output never exists in full.

An Auto3DSeg SegResNet(DS) ends in a 1×1×1 convolution from its full-resolution feature maps
(``init_filters`` channels, e.g. 32) to the classes (up to 118 for whole body): per voxel, a matrix
product. Run inside OpenVINO, the window's output is ``classes × window`` floats (5.8 GB for 118
classes at Slicer's 224×224×144 window, with OpenVINO's copy); split off, OpenVINO returns the
feature maps and :class:`ClassHead` computes the logits a chunk of voxels at a time, straight into
the stitcher's buffer (:class:`~mhub_cpu.segment.merger.SlabStitcher`).

The split is read off the compiled IR itself (:func:`split_class_head`): the model's one output must
be a ``Convolution`` with a 1×1×1 kernel, unit strides and dilations and no padding, with constant
weights (f32, or f16 decompressed by a ``Convert``), optionally followed by an ``Add`` of a
constant bias. Anything else (an INT8 head whose weights NNCF quantised, another architecture)
keeps the head inside OpenVINO, and the run says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Logits computed at a time per thread: classes × voxels × 4 bytes at most this (beside the buffer).
CHUNK_BYTES = 32 << 20


@dataclass(frozen=True)
class ClassHead:
    """A 1×1×1 convolution ``logits = weight @ features + bias`` over the channel axis.

    Attributes:
        weight: ``(classes, features)`` float32.
        bias: ``(classes,)`` float32.
    """

    weight: np.ndarray
    bias: np.ndarray

    @property
    def classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def features(self) -> int:
        return int(self.weight.shape[1])

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Logits (classes × spatial) of feature maps (features × spatial), float32."""
        flat = features.reshape(self.features, -1)
        logits = self.weight @ flat
        logits += self.bias[:, None]
        return logits.reshape(self.classes, *features.shape[1:])

    def rows_per_chunk(self, plane_voxels: int) -> int:
        """How many rows of ``plane_voxels`` voxels each one chunk of logits may cover."""
        return max(1, CHUNK_BYTES // (4 * self.classes * max(1, plane_voxels)))


def _constant(node: Any) -> np.ndarray | None:
    """The value of a ``Constant``, or of a ``Convert`` of one (fp16-compressed weights), else ``None``."""
    if node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    if node.get_type_name() != "Constant":
        return None
    return np.asarray(node.get_data(), dtype=np.float32)


def split_class_head(model: Any) -> tuple[Any, ClassHead] | None:
    """``(model ending at the head's input, head)`` for an OpenVINO model whose output is a 1×1×1
    convolution (with optional bias), else ``None``. ``model`` is not changed."""
    import openvino as ov

    results = model.get_results()
    if len(results) != 1:
        return None
    node = results[0].input_value(0).get_node()
    bias = np.zeros(0, dtype=np.float32)
    if node.get_type_name() == "Add":
        first, second = (node.input_value(i).get_node() for i in (0, 1))
        conv, constant = (first, second) if first.get_type_name() == "Convolution" else (second, first)
        value = _constant(constant)
        if conv.get_type_name() != "Convolution" or value is None:
            return None
        bias = value.reshape(-1)
        node = conv
    if node.get_type_name() != "Convolution":
        return None
    attributes = node.get_attributes()
    weight = _constant(node.input_value(1).get_node())
    if weight is None or weight.ndim != 5 or weight.shape[2:] != (1, 1, 1):
        return None
    if any(int(v) != 1 for v in [*attributes.get("strides", []), *attributes.get("dilations", [])]):
        return None
    if any(int(v) != 0 for v in [*attributes.get("pads_begin", []), *attributes.get("pads_end", [])]):
        return None
    classes = weight.shape[0]
    if bias.size == 0:
        bias = np.zeros(classes, dtype=np.float32)
    if bias.shape != (classes,):
        return None
    features = node.input_value(0)
    body = ov.Model([features], model.get_parameters(), f"{model.get_friendly_name()}-features")
    return body, ClassHead(np.ascontiguousarray(weight.reshape(classes, -1)), np.ascontiguousarray(bias))


def has_class_head(xml_path: Path) -> bool:
    """Whether the IR's class head can be split off (read from the IR, nothing compiled)."""
    import openvino as ov

    return split_class_head(ov.Core().read_model(str(xml_path))) is not None
