"""bpreg weights (``model.pt``) → cached OpenVINO IR, and its INT8 quantisation.

The IR is converted from the torch module of :mod:`.bodypart_network` in full fp32 and cached
under ``ir_root()/bodypart-<weights hash>-v<CONVERTER_VERSION>/``. The INT8 IR is NNCF's
quantisation of it (:func:`mhub_cpu.convert.quantize.quantize_int8`), calibrated on slices the
body-part job preprocesses, with the first convolution (one input channel, intensities at 10 HU
per INT8 step) and the head (``conv6``, ``fc7``) left in f32: under 1 % of the operations, most of
the quantisation error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mhub_cpu.convert.ir_cache import IR_XML, cached_ir
from mhub_cpu.convert.quantize import quantize_int8
from mhub_cpu.core.errors import ModelError
from mhub_cpu.core.progress import log

#: Bump when :mod:`.bodypart_network` or the conversion changes.
CONVERTER_VERSION = "2"
#: Slice size of the network input.
SIZE = 128


def convert_bodypart(weights: Path, fingerprint: str) -> Path:
    """The cached fp32 IR of bpreg's ``weights``, converted on first use (needs torch).

    Args:
        fingerprint: Identifies the model (weights and config) in the cache.

    Raises:
        ModelError: torch is missing, the file is not a state_dict of bpreg's network, holds more than
            tensors, or holds NaN or infinite weights (:func:`~mhub_cpu.convert.bodypart_network.load_network`).
    """

    def build(staging: Path) -> None:
        try:
            import openvino as ov
            import torch

            from mhub_cpu.convert.bodypart_network import load_network
        except ImportError as exc:
            raise ModelError(f"converting {weights} needs torch (pip install mhub-cpu[convert]): {exc}") from exc
        log(f"converting {weights} to OpenVINO IR (once)")
        try:
            net = load_network(str(weights))
        except (RuntimeError, OSError, ValueError, EOFError) as exc:  # torch.load and load_state_dict's errors
            detail = " ".join(str(exc).split())[:300]
            raise ModelError(f"{weights} is not a bpreg state_dict matching the VGG16 network: {detail}") from exc
        with torch.no_grad():
            ov_model = ov.convert_model(net, example_input=torch.zeros(1, 1, SIZE, SIZE), input=[(-1, 1, SIZE, SIZE)])
        ov.save_model(ov_model, staging / IR_XML, compress_to_fp16=False)

    return cached_ir(f"bodypart-{fingerprint}-v{CONVERTER_VERSION}", build) / IR_XML


def quantize_bodypart(fp32_xml: Path, name: str, samples: Callable[[], list[np.ndarray]]) -> Path:
    """The cached INT8 IR of ``fp32_xml`` under ``name``, quantised on first use on ``samples()``
    (each an (1, 1, 128, 128) network input)."""

    def build(staging: Path) -> None:
        import openvino as ov

        ov_model = ov.Core().read_model(fp32_xml)
        ops = [op for op in ov_model.get_ordered_ops() if op.get_type_name() in ("Convolution", "MatMul")]
        keep_f32 = (ops[0].get_friendly_name(), ops[-2].get_friendly_name(), ops[-1].get_friendly_name())
        ov.save_model(quantize_int8(ov_model, samples(), keep_f32), staging / IR_XML, compress_to_fp16=False)

    return cached_ir(name, build) / IR_XML
