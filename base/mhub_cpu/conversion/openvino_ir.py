"""Auto3DSeg checkpoint → OpenVINO IR with a static input shape, cached by content and settings.

The IR folder holds ``model.xml``/``model.bin`` and ``model_config.json`` (the preprocessing and
sliding-window settings of the checkpoint's ``config``), so that inference from a cached IR needs
neither torch nor the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..auto3dseg.bundle import ModelBundle
from ..cache import cache_dir
from ..errors import ModelError
from ..progress import log
from .checkpoint import load_checkpoint

#: IR weight formats: fp32 weights, fp16-compressed weights (decompressed to f32 at load), or
#: INT8 (NNCF post-training quantisation, see :mod:`mhub_cpu.conversion.quantize`).
IR_VARIANTS = ("fp32", "fp16", "int8")
#: Bump when the IR or model_config.json layout changes, to invalidate old cache entries.
CACHE_FORMAT = 3
#: Checkpoint config keys carried to inference.
RUNTIME_KEYS = (
    "roi_size", "resample_resolution", "normalize_mode", "intensity_bounds", "orientation_ras",
    "crop_foreground", "sigmoid", "input_channels", "output_classes",
)


@dataclass(frozen=True)
class ConvertedModel:
    """A cached OpenVINO IR and the settings inference needs."""

    xml_path: Path
    config: dict[str, Any]
    ir_variant: str


def network_from_config(config: dict[str, Any]):
    """Rebuild the network from ``config["network"]`` with MONAI's bundle ConfigParser.

    ``INSTANCE_NVFUSER`` normalisation (a CUDA-only fused kernel of instance norm) is replaced by
    plain ``INSTANCE``, which computes the same function on CPU.
    """
    from monai.bundle import ConfigParser

    network_config = json.loads(json.dumps(config["network"]))
    if str(network_config.get("norm", "")).upper() == "INSTANCE_NVFUSER":
        network_config["norm"] = "INSTANCE"
    try:
        return ConfigParser(network_config).get_parsed_content()
    except Exception as exc:
        raise ModelError(f"cannot build the network from the checkpoint config: {exc}") from exc


def size_divisor(config: dict[str, Any]) -> int:
    """Input sizes must be multiples of this: SegResNet(DS) halves the resolution
    ``len(blocks_down) − 1`` times."""
    return 2 ** (len(config["network"].get("blocks_down", [1, 2, 2, 4, 4])) - 1)


def runtime_config(config: dict[str, Any], output_classes: int) -> dict[str, Any]:
    """The subset of the checkpoint config used at inference, with Auto3DSeg's defaults filled in."""
    if config.get("extra_modalities"):
        raise ModelError("multi-input models (extra_modalities) are not supported")
    if "roi_size" not in config or "normalize_mode" not in config:
        raise ModelError("checkpoint config lacks roi_size or normalize_mode")
    runtime = {key: config[key] for key in RUNTIME_KEYS if key in config}
    runtime.setdefault("crop_foreground", True)
    runtime.setdefault("orientation_ras", False)
    runtime.setdefault("sigmoid", False)
    runtime.setdefault("input_channels", 1)
    runtime.setdefault("intensity_bounds", None)
    runtime.setdefault("resample_resolution", None)
    runtime["output_classes"] = output_classes
    runtime["size_divisor"] = size_divisor(config)
    runtime["init_filters"] = int(config["network"].get("init_filters", 32))  # for the memory model
    runtime["roi_size"] = [int(v) for v in runtime["roi_size"]]
    return runtime


def _cache_key(bundle: ModelBundle, ir_variant: str, extra: str) -> str:
    import openvino

    text = f"{CACHE_FORMAT}|{bundle.checkpoint_sha256}|{ir_variant}|{openvino.__version__}|{extra}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def convert_bundle(
    bundle: ModelBundle,
    ir_variant: str = "fp32",
    quantizer: Callable[[Any, dict[str, Any]], Any] | None = None,
    quantizer_id: str = "",
    trust_model: bool = False,
) -> ConvertedModel:
    """Return the cached IR of ``bundle`` in ``ir_variant``, converting it on first use.

    Args:
        bundle: The model.
        ir_variant: ``fp32``, ``fp16`` (weights compressed to fp16) or ``int8``.
        quantizer: For ``int8``: function ``(ov_model, runtime_config) -> quantised ov_model``.
        quantizer_id: Identifies the quantisation settings and calibration data in the cache key.
        trust_model: Unpickle the checkpoint with the full unpickler (see :mod:`.checkpoint`).
    """
    if ir_variant not in IR_VARIANTS:
        raise ModelError(f"unknown IR variant {ir_variant!r}; choose one of {', '.join(IR_VARIANTS)}")
    if ir_variant == "int8" and quantizer is None:
        raise ModelError("int8 conversion needs a quantizer (calibration data)")
    target = cache_dir() / "openvino" / f"{bundle.model_id}-{ir_variant}-{_cache_key(bundle, ir_variant, quantizer_id)}"
    xml_path = target / "model.xml"
    config_path = target / "model_config.json"
    if xml_path.exists() and config_path.exists():
        return ConvertedModel(xml_path, json.loads(config_path.read_text()), ir_variant)

    import openvino as ov
    import torch

    log(f"converting {bundle.model_id} to OpenVINO IR ({ir_variant}); done once, then cached in {target}")
    config, state_dict = load_checkpoint(bundle.checkpoint_bytes, trust=trust_model)
    network = network_from_config(config)
    try:
        network.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"state_dict does not match the network of the config: {exc}") from exc
    network.eval()
    roi = [int(v) for v in config["roi_size"]]
    channels = int(config.get("input_channels", 1))
    # Trace on a small input: the network is fully convolutional, and `input=` fixes the IR's
    # static shape to the model window. Tracing at full window size needs several GB (118-class
    # whole-body models were killed for memory on a 24 GB machine).
    example = torch.zeros(1, channels, *[2 * size_divisor(config)] * 3)
    with torch.no_grad():
        output_classes = int(network(example).shape[1])
        ov_model = ov.convert_model(network, example_input=example, input=[(1, channels, *roi)])
    runtime = runtime_config(config, output_classes)
    if ir_variant == "int8":
        ov_model = quantizer(ov_model, runtime)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        ov.save_model(ov_model, staging / "model.xml", compress_to_fp16=(ir_variant == "fp16"))
        (staging / "model_config.json").write_text(json.dumps(runtime, indent=2) + "\n")
        if not target.exists():  # else a concurrent conversion finished first; keep its result
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return ConvertedModel(xml_path, runtime, ir_variant)
