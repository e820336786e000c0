"""The closed schema of an Auto3DSeg checkpoint's ``config``: nothing in a model file is evaluated.

A checkpoint's ``config["network"]`` is a MONAI bundle config. MONAI's ``ConfigParser`` would
instantiate any ``_target_`` in it and evaluate ``$`` expressions, so a model file could run code
although ``model.pt`` passes PyTorch's ``weights_only`` unpickler. Here the network is described by
the architecture parameters of MONAI's ``SegResNetDS`` and ``SegResNet`` only, each type- and
range-checked, and the values the engine reads from the rest of the config are checked the same
way. Everything else a trainer may have saved (learning rates, paths, its own ``$`` expressions) is
never read, so it is ignored; a nested ``_target_`` or an expression in the network is refused by name.
``--trust-model`` is the only way past the network's schema (MONAI's ConfigParser then builds it);
the values inference reads (:func:`check_runtime_values`), the label count and the weights are
checked either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mhub_cpu.core.errors import ModelError

#: The network's own ``_target_``: the architectures Slicer's Auto3DSeg catalogue uses.
ARCHITECTURES = {"SegResNetDS": "SegResNetDS", "SegResNet": "SegResNet"}
_PREFIX = "monai.networks.nets."
#: Strings that MONAI's ConfigParser would evaluate (``$``), reference (``@``) or import (``%``).
EXPRESSION_PREFIXES = ("$", "@", "%")

#: Normalisation and activation layers by MONAI's factory names, with the keyword arguments each may take.
NORMS: dict[str, frozenset[str]] = {
    "INSTANCE": frozenset({"affine", "eps", "momentum", "track_running_stats"}),
    "INSTANCE_NVFUSER": frozenset({"affine", "eps"}),
    "BATCH": frozenset({"affine", "eps", "momentum", "track_running_stats"}),
    "GROUP": frozenset({"num_groups", "affine", "eps"}),
    "LAYER": frozenset({"elementwise_affine", "eps"}),
}
ACTS: dict[str, frozenset[str]] = {
    "RELU": frozenset({"inplace"}),
    "LEAKYRELU": frozenset({"inplace", "negative_slope"}),
    "PRELU": frozenset({"num_parameters", "init"}),
    "ELU": frozenset({"inplace", "alpha"}),
    "GELU": frozenset(),
    "SELU": frozenset({"inplace"}),
    "SWISH": frozenset({"inplace"}),
    "MISH": frozenset({"inplace"}),
}
UPSAMPLE_MODES = ("deconv", "nontrainable", "pixelshuffle")
#: ``normalize_mode`` values of Auto3DSeg's SegResNet trainer.
NORMALIZE_MODES = ("range", "ct", "meanstd", "mri", "none")

Check = Callable[[str, Any], Any]


def _int(low: int, high: int) -> Check:
    def check(where: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ModelError(f"{where}: {value!r} is not an integer in [{low}, {high}]")
        return value
    return check


def _number(low: float, high: float) -> Check:
    def check(where: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise ModelError(f"{where}: {value!r} is not a number in [{low}, {high}]")
        return float(value)
    return check


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ModelError(f"{where}: {value!r} is not true or false")
    return value


def _ints(low: int, high: int, min_len: int, max_len: int) -> Check:
    item = _int(low, high)

    def check(where: str, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list | tuple) or not min_len <= len(value) <= max_len:
            count = str(min_len) if min_len == max_len else f"{min_len} to {max_len}"
            raise ModelError(f"{where}: {value!r} is not a list of {count} integers")
        return tuple(item(f"{where}[{i}]", v) for i, v in enumerate(value))
    return check


def _numbers(low: float, high: float, count: int) -> Check:
    item = _number(low, high)

    def check(where: str, value: Any) -> tuple[float, ...]:
        if not isinstance(value, list | tuple) or len(value) != count:
            raise ModelError(f"{where}: {value!r} is not a list of {count} numbers")
        return tuple(item(f"{where}[{i}]", v) for i, v in enumerate(value))
    return check


def _optional(check: Check) -> Check:
    def optional(where: str, value: Any) -> Any:
        return None if value is None else check(where, value)
    return optional


def _choice(choices: tuple[str, ...]) -> Check:
    def check(where: str, value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ModelError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return value.lower()
    return check


def _layer(kind: str, table: dict[str, frozenset[str]]) -> Check:
    """A MONAI layer factory argument: ``"NAME"`` or ``["NAME", {kwargs}]`` with the kwargs the layer takes."""
    scalar = _number(-1e6, 1e6)

    def check(where: str, value: Any) -> Any:
        name, kwargs = (value, {}) if isinstance(value, str) else (value[0], value[1]) if (
            isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[1], Mapping)) else (None, None)
        if not isinstance(name, str) or name.upper() not in table:
            raise ModelError(f"{where}: {value!r} is not a {kind} layer this engine builds ({', '.join(table)})")
        name = name.upper()
        checked: dict[str, Any] = {}
        for key, item in (kwargs or {}).items():
            if key not in table[name]:
                raise ModelError(f"{where}: {key!r} is not an argument of the {name} {kind} layer")
            checked[key] = item if isinstance(item, bool) else scalar(f"{where}.{key}", item)
            if key in ("num_groups", "num_parameters"):
                checked[key] = _int(1, 4096)(f"{where}.{key}", item)
        return (name, checked) if checked else name
    return check


_COMMON: dict[str, Check] = {
    "spatial_dims": _int(3, 3),
    "init_filters": _int(1, 512),
    "in_channels": _int(1, 1),
    "out_channels": _int(2, 1024),
    "act": _layer("activation", ACTS),
    "norm": _layer("normalisation", NORMS),
    "blocks_down": _ints(1, 32, 1, 8),
    "upsample_mode": _choice(UPSAMPLE_MODES),
}
#: Per architecture, the parameters its constructor takes (``preprocess``, a module, is not one of them here).
PARAMETERS: dict[str, dict[str, Check]] = {
    "SegResNetDS": {
        **_COMMON,
        "blocks_up": _optional(_ints(1, 32, 1, 7)),
        "dsdepth": _int(1, 8),
        "resolution": _optional(_numbers(1e-3, 1e3, 3)),
    },
    "SegResNet": {
        **_COMMON,
        "blocks_up": _ints(1, 32, 1, 7),
        "dropout_prob": _optional(_number(0.0, 1.0)),
        "norm_name": _choice(("", "group", "batch", "instance")),
        "num_groups": _int(1, 4096),
        "use_conv_final": _bool,
    },
}


@dataclass(frozen=True)
class NetworkSpec:
    """A network the engine may build: a known architecture and its checked keyword arguments."""

    architecture: str
    kwargs: dict[str, Any]

    @property
    def out_channels(self) -> int:
        return int(self.kwargs.get("out_channels", 2))

    @property
    def size_divisor(self) -> int:
        """Input sizes must be multiples of this: both architectures halve the resolution
        ``len(blocks_down) − 1`` times (MONAI's default ``blocks_down`` has 4 entries)."""
        return 2 ** (len(self.kwargs.get("blocks_down", (1, 2, 2, 4))) - 1)


def refuse_expressions(value: Any, where: str = "config") -> None:
    """Refuse any ``_target_`` below the network's own and any string MONAI would evaluate, by key path."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "_target_" and where != "config.network":
                raise ModelError(f"{where}: '_target_' is not allowed (the network is built from a closed schema; "
                                 "--trust-model skips this check)")
            refuse_expressions(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            refuse_expressions(item, f"{where}[{i}]")
    elif isinstance(value, str) and value.startswith(EXPRESSION_PREFIXES):
        raise ModelError(f"{where}: {value[:40]!r} is an expression, and nothing in a model file is evaluated "
                         "(--trust-model skips this check)")


def network_spec(network: Any) -> NetworkSpec:
    """Check ``config["network"]`` against the closed schema of its architecture.

    Raises:
        ModelError: an unknown architecture, an unknown key, or a value of the wrong type or range,
            named by its key path.
    """
    if not isinstance(network, Mapping):
        raise ModelError("config.network: the checkpoint config has no network description")
    refuse_expressions(network, "config.network")
    target = network.get("_target_")
    name = target.removeprefix(_PREFIX) if isinstance(target, str) else None
    if name not in ARCHITECTURES:
        raise ModelError(f"config.network._target_: {target!r} is not a known architecture ({', '.join(ARCHITECTURES)})")
    schema = PARAMETERS[name]
    kwargs: dict[str, Any] = {}
    for key, value in network.items():
        if key == "_target_":
            continue
        if key not in schema:
            raise ModelError(f"config.network.{key}: not a parameter of {name} this engine accepts "
                             "(the network is built from a closed schema; --trust-model skips this check)")
        kwargs[key] = schema[key](f"config.network.{key}", value)
    spec = NetworkSpec(name, kwargs)
    blocks = len(kwargs.get("blocks_down", (1, 2, 2, 4)))
    if "blocks_up" in kwargs and kwargs["blocks_up"] is not None and len(kwargs["blocks_up"]) != blocks - 1:
        raise ModelError(f"config.network.blocks_up: {len(kwargs['blocks_up'])} entries, but blocks_down has {blocks} "
                         f"(blocks_up needs {blocks - 1})")
    if name == "SegResNetDS" and kwargs.get("dsdepth", 1) > blocks:
        raise ModelError(f"config.network.dsdepth: {kwargs['dsdepth']} is deeper than the network's {blocks} levels")
    return spec


#: The config keys the engine reads besides the network (Auto3DSeg's SegResNet trainer writes them).
RUNTIME_CHECKS: dict[str, Check] = {
    "roi_size": _ints(1, 1024, 3, 3),
    "resample_resolution": _optional(_numbers(0.01, 100.0, 3)),
    "normalize_mode": _choice(NORMALIZE_MODES),
    "intensity_bounds": _optional(_numbers(-1e5, 1e5, 2)),
    "orientation_ras": _bool,
    "crop_foreground": _bool,
    "sigmoid": _bool,
    "input_channels": _int(1, 16),
    "output_classes": _int(2, 1024),
}


def check_runtime_values(config: Any, size_divisor: int | None = None, network: str = "the network") -> None:
    """Type- and range-check the config values inference reads (:data:`RUNTIME_CHECKS`), and that
    the window is a multiple of ``size_divisor``. Also done under ``--trust-model``: these values
    are never evaluated, and a wrong one would fail deep in conversion or inference.

    Raises:
        ModelError: naming the first key whose value is refused.
    """
    if not isinstance(config, Mapping):
        raise ModelError("the checkpoint's config is not a mapping")
    for key, check in RUNTIME_CHECKS.items():
        if key in config:
            check(f"config.{key}", config[key])
    bounds = config.get("intensity_bounds")
    if bounds is not None and not float(bounds[0]) < float(bounds[1]):
        raise ModelError(f"config.intensity_bounds: {list(bounds)} is not an increasing pair (low, high)")
    roi = config.get("roi_size")
    if roi is not None and size_divisor is not None and any(int(v) % size_divisor for v in roi):
        raise ModelError(f"config.roi_size: {list(roi)} is not divisible by {size_divisor}, the size divisor of {network}")


def check_config(config: Any, label_count: int | None = None) -> NetworkSpec:
    """Check the whole checkpoint config: the network (:func:`network_spec`), the inference settings
    the engine reads (:func:`check_runtime_values`), and that they agree with each other and with
    ``labels.csv``.

    Args:
        config: ``checkpoint["config"]``.
        label_count: Labels in the model's ``labels.csv`` (the network outputs them plus background).

    Raises:
        ModelError: naming the first key whose value is refused.
    """
    if not isinstance(config, Mapping):
        raise ModelError("the checkpoint's config is not a mapping")
    spec = network_spec(config.get("network"))
    levels = len(spec.kwargs.get("blocks_down", (1, 2, 2, 4)))
    check_runtime_values(config, spec.size_divisor, f"a {spec.architecture} with {levels} levels")
    classes = config.get("output_classes")
    if classes is not None and int(classes) != spec.out_channels:
        raise ModelError(f"config.output_classes: {classes}, but config.network.out_channels is {spec.out_channels}")
    if label_count is not None:
        check_label_count(label_count, spec.out_channels)
    return spec


def check_label_count(label_count: int, out_channels: int) -> None:
    """The network outputs one channel per label of ``labels.csv`` plus background; anything else
    would write labels for channels that mean something else, silently."""
    if label_count + 1 != out_channels:
        raise ModelError(f"labels.csv has {label_count} labels, but the network has {out_channels} outputs "
                         f"(labels plus background: {label_count + 1} expected)")
