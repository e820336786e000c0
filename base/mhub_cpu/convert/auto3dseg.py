"""Auto3DSeg checkpoint → OpenVINO IR with a static input shape, cached by content and settings.

The IR folder holds ``model.xml``/``model.bin`` and ``model_config.json`` (the preprocessing and
sliding-window settings of the checkpoint's ``config``), so that inference from a cached IR needs
neither torch nor the checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mhub_cpu.auto3dseg.bundle import ModelBundle
from mhub_cpu.auto3dseg.network_schema import check_config, check_label_count, check_runtime_values, network_spec
from mhub_cpu.convert.checkpoint import load_checkpoint
from mhub_cpu.convert.ir_cache import IR_XML, cache_key, cached_ir, ir_root
from mhub_cpu.convert.release import fetch_ir
from mhub_cpu.core.errors import ModelError
from mhub_cpu.core.progress import log
from mhub_cpu.runtime.precision import IrFormat

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
    ir: IrFormat


#: Quantises a converted model: ``(ov_model, runtime_config) -> INT8 ov_model`` (see ``segment.calibration``).
Quantizer = Callable[[Any, dict[str, Any]], Any]
#: The settings inference needs, beside the IR.
CONFIG_JSON = "model_config.json"


def network_from_config(config: dict[str, Any], trust: bool = False) -> Any:
    """Build the network of ``config["network"]`` by calling its architecture's class with the
    parameters the closed schema allows (:mod:`mhub_cpu.auto3dseg.network_schema`).

    ``INSTANCE_NVFUSER`` normalisation (a CUDA-only fused kernel of instance norm) is replaced by
    plain ``INSTANCE``, which computes the same function on CPU. With ``trust`` (``--trust-model``)
    the config is parsed by MONAI's ConfigParser instead, which instantiates whatever it names.
    """
    if trust:
        return _network_by_config_parser(config)
    from monai.networks import nets

    spec = network_spec(config.get("network"))
    kwargs = dict(spec.kwargs)
    norm = kwargs.get("norm")
    if norm == "INSTANCE_NVFUSER" or (isinstance(norm, tuple) and norm[0] == "INSTANCE_NVFUSER"):
        kwargs["norm"] = "INSTANCE" if isinstance(norm, str) else ("INSTANCE", norm[1])
    try:
        return getattr(nets, spec.architecture)(**kwargs)
    except (ValueError, TypeError, AssertionError, NotImplementedError, KeyError) as exc:
        raise ModelError(f"cannot build the {spec.architecture} of the checkpoint config: {exc}") from exc


def _network_by_config_parser(config: dict[str, Any]) -> Any:
    import torch
    from monai.bundle import ConfigParser

    log("warning: --trust-model: the network config is parsed by MONAI's ConfigParser, which runs what it names "
        "(the closed schema of its parameters is skipped)")
    if not isinstance(config.get("network"), dict):
        raise ModelError("config.network: the checkpoint config has no network description")
    try:
        network_config = json.loads(json.dumps(config["network"]))
        if str(network_config.get("norm", "")).upper() == "INSTANCE_NVFUSER":
            network_config["norm"] = "INSTANCE"
        network = ConfigParser(network_config).get_parsed_content()
    except Exception as exc:
        raise ModelError(f"cannot build the network from the checkpoint config: {exc}") from exc
    if not isinstance(network, torch.nn.Module):
        raise ModelError(f"config.network built a {type(network).__name__}, not a network")
    return network


def check_weights(state_dict: dict[str, Any]) -> None:
    """Refuse weights with NaN or infinite values, naming the first such tensor (such a network
    would find nothing, and the user would be told that the image holds no structures)."""
    import torch

    if not isinstance(state_dict, dict):
        raise ModelError(f"the checkpoint's state_dict is a {type(state_dict).__name__}, not a mapping of tensors")
    for name, tensor in state_dict.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelError(f"the checkpoint's weights are broken: {name} holds {bad} NaN or infinite values of {tensor.numel()}")


def size_divisor(config: dict[str, Any]) -> int:
    """Input sizes must be multiples of this: SegResNet(DS) halves the resolution
    ``len(blocks_down) − 1`` times."""
    return 2 ** (len(config["network"].get("blocks_down", [1, 2, 2, 4])) - 1)


def network_size_divisor(network: Any, config: dict[str, Any]) -> int:
    """:func:`size_divisor` of the built network (its ``blocks_down``), which under ``--trust-model``
    need not be what the config's text says."""
    blocks = getattr(network, "blocks_down", None)
    if isinstance(blocks, list | tuple) and blocks:
        return int(2 ** (len(blocks) - 1))
    return size_divisor(config)


def check_supported(config: dict[str, Any]) -> None:
    """Refuse a model this engine cannot run as its trainer meant, before any work on an image.

    Raises:
        ModelError: multi-label (sigmoid) outputs, more than one input channel or extra modalities,
            or a config without the fields inference needs.
    """
    if config.get("extra_modalities"):
        raise ModelError("multi-input models (extra_modalities) are not supported")
    if int(config.get("input_channels", 1)) != 1:
        raise ModelError(f"models with {config['input_channels']} input channels are not supported (single CT input only)")
    if config.get("sigmoid"):
        raise ModelError("sigmoid (multi-label) models are not supported: labels would overlap, one label per voxel is written")
    if "roi_size" not in config or "normalize_mode" not in config:
        raise ModelError("checkpoint config lacks roi_size or normalize_mode")


def runtime_config(config: dict[str, Any], output_classes: int, divisor: int | None = None) -> dict[str, Any]:
    """The subset of the checkpoint config used at inference, with Auto3DSeg's defaults filled in
    (``divisor``: the network's size divisor, else :func:`size_divisor` of the config)."""
    check_supported(config)
    runtime = {key: config[key] for key in RUNTIME_KEYS if key in config}
    runtime.setdefault("crop_foreground", True)
    runtime.setdefault("orientation_ras", False)
    runtime.setdefault("sigmoid", False)
    runtime.setdefault("input_channels", 1)
    runtime.setdefault("intensity_bounds", None)
    runtime.setdefault("resample_resolution", None)
    runtime["output_classes"] = output_classes
    runtime["size_divisor"] = divisor if divisor is not None else size_divisor(config)
    network = config.get("network")
    filters = network.get("init_filters", 32) if isinstance(network, dict) else 32
    runtime["init_filters"] = filters if isinstance(filters, int) and not isinstance(filters, bool) else 32  # for the memory model
    runtime["roi_size"] = [int(v) for v in runtime["roi_size"]]
    return runtime


class ConverterMissing(ModelError):
    """No released IR fits and PyTorch, which a local conversion needs, is not installed."""


def ir_folder(bundle: ModelBundle, ir: IrFormat = IrFormat.FP32, quantizer_id: str = "") -> Path:
    """The cache folder of ``bundle``'s IR in format ``ir`` (which may not exist yet): what
    ``--precision auto`` reads recorded agreements from without converting anything."""
    import openvino

    key = cache_key(CACHE_FORMAT, bundle.checkpoint_sha256, ir.value, openvino.__version__, quantizer_id)
    return ir_root() / f"{bundle.model_id}-{ir}-{key}"


def convert_bundle(
    bundle: ModelBundle,
    ir: IrFormat = IrFormat.FP32,
    quantizer: Quantizer | None = None,
    quantizer_id: str = "",
    trust_model: bool = False,
) -> ConvertedModel:
    """Return the cached IR of ``bundle`` in format ``ir``, converting it on first use.

    Args:
        bundle: The model.
        ir: ``fp32``, ``fp16`` (weights compressed to fp16) or ``int8``.
        quantizer: For ``int8``: function ``(ov_model, runtime_config) -> quantised ov_model``.
        quantizer_id: Identifies the quantisation settings and calibration data in the cache key.
        trust_model: Unpickle the checkpoint with the full unpickler (see :mod:`.checkpoint`).

    Raises:
        ModelError: the checkpoint cannot be loaded or converted, or the model is not supported
            (:func:`check_supported`), also for an IR found in the cache.
    """
    if ir is IrFormat.INT8 and quantizer is None:
        raise ModelError("int8 conversion needs a quantizer (calibration data)")

    def build(staging: Path) -> None:
        released, not_released = fetch_ir(bundle.model_id, bundle.checkpoint_sha256, ir.value, quantizer_id, staging)
        if released:
            return
        import openvino as ov

        try:
            import torch
        except ImportError as exc:
            raise ConverterMissing(
                f"no pre-converted {ir} IR of {bundle.model_id} ({'; '.join(not_released)}), and converting it here needs "
                "PyTorch and MONAI: pip install 'mhub-cpu[convert]'"
            ) from exc
        log(f"converting {bundle.model_id} to OpenVINO IR ({ir}); done once, then cached")
        config, state_dict = load_checkpoint(bundle.checkpoint_bytes, trust=trust_model)
        if trust_model:  # the network is ConfigParser's; the values inference reads are still checked
            check_runtime_values(config)
        else:
            check_config(config, label_count=len(bundle.labels))
        check_supported(config)
        check_weights(state_dict)
        network = network_from_config(config, trust=trust_model)
        divisor = network_size_divisor(network, config)
        if trust_model:
            check_runtime_values(config, divisor)
        try:
            network.load_state_dict(state_dict, strict=True)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise ModelError(f"state_dict does not match the network of the config: {exc}") from exc
        network.eval()
        roi = [int(v) for v in config["roi_size"]]
        # Trace on a small input: the network is fully convolutional, and `input=` fixes the IR's
        # static shape to the model window. Tracing at full window size needs several GB (118-class
        # whole-body models were killed for memory on a 24 GB machine).
        example = torch.zeros(1, 1, *[2 * divisor] * 3)
        with torch.no_grad():
            output_classes = int(network(example).shape[1])
            check_label_count(len(bundle.labels), output_classes)  # what the built network does, also when trusted
            ov_model = ov.convert_model(network, example_input=example, input=[(1, 1, *roi)])
        runtime = runtime_config(config, output_classes, divisor)
        if quantizer is not None and ir is IrFormat.INT8:
            ov_model = quantizer(ov_model, runtime)
        ov.save_model(ov_model, staging / IR_XML, compress_to_fp16=(ir is IrFormat.FP16))
        (staging / CONFIG_JSON).write_text(json.dumps(runtime, indent=2) + "\n")

    target = cached_ir(ir_folder(bundle, ir, quantizer_id).name, build, required=(IR_XML, CONFIG_JSON))
    config = json.loads((target / CONFIG_JSON).read_text())
    check_supported(config)
    # Also for an IR from the cache or a release, which match the checkpoint only: this model's labels.csv
    # must still name every output.
    check_label_count(len(bundle.labels), int(config.get("output_classes", 0)))
    return ConvertedModel(target / IR_XML, config, ir)
