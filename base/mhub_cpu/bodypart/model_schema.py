"""Closed schemas of a bpreg model directory's ``config.json`` and ``inference-settings.json``.

Both files are plain JSON, so nothing in them runs; but a value of the wrong type or range (a
string slope, a zero or NaN slope, a landmark the look-up table lacks) would otherwise surface
deep in post-processing as a crash (exit 70) or as a silently wrong score curve. Each file is
checked against exactly the keys bpreg writes: ``config.json`` has the fields of bpreg's
``ModelSettings`` dataclass (``bpreg/settings/model_settings.py``; only ``base_model`` is read
here), ``inference-settings.json`` those of its ``InferenceSettingsStorage``
(``bpreg/inference/inference_settings.py``). A key outside them is refused by name: this engine
cannot know what an unknown setting would have changed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from mhub_cpu.core.errors import ModelError

Check = Callable[[str, Any], Any]
T = TypeVar("T")
#: A landmark name in a look-up table (bpreg's are like ``pelvis_start``, ``Th12``, ``L5``).
LANDMARK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
MAX_LANDMARKS = 256
MAX_TEXT = 4096


def _at(where: str) -> str:
    """``key.path: `` before a message (nothing at the top of a file)."""
    return f"{where}: " if where else ""


def _show(value: Any) -> str:
    """``repr(value)``, cut to a length that fits a one-line message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _child(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _in_file(source: str, check: Callable[[], T]) -> T:
    """Run ``check``, naming ``source`` (the file) before the key path of a refusal."""
    try:
        return check()
    except ModelError as exc:
        raise ModelError(f"{source}: {exc}") from None


def _number(low: float = -math.inf, high: float = math.inf, finite: bool = True) -> Check:
    def check(where: str, value: Any) -> float:
        ok = not isinstance(value, bool) and isinstance(value, int | float)
        if ok and math.isnan(value) and not finite:
            return math.nan
        if not ok or not math.isfinite(value) or not low <= value <= high:
            span = f" in [{low}, {high}]" if math.isfinite(low) or math.isfinite(high) else ""
            raise ModelError(f"{_at(where)}{value!r} is not a finite number{span}")
        return float(value)
    return check


def _int(low: int, high: int) -> Check:
    def check(where: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ModelError(f"{_at(where)}{value!r} is not an integer in [{low}, {high}]")
        return value
    return check


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ModelError(f"{_at(where)}{value!r} is not true or false")
    return value


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ModelError(f"{_at(where)}{_show(value)} is not a string of at most {MAX_TEXT} characters")
    return value


def _numbers(count: int) -> Check:
    item = _number()

    def check(where: str, value: Any) -> list[float]:
        if not isinstance(value, list) or len(value) != count:
            raise ModelError(f"{_at(where)}{_show(value)} is not a list of {count} numbers")
        return [item(f"{where}[{i}]", v) for i, v in enumerate(value)]
    return check


def _closed(where: str, raw: Any, schema: Mapping[str, Check], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check a JSON object against ``schema``: every key known, every required key present."""
    if not isinstance(raw, Mapping):
        raise ModelError(f"{_at(where)}not a JSON object")
    for key in raw:
        if key not in schema:
            known = ", ".join(schema) if len(schema) <= 8 else f"the {len(schema)} keys bpreg writes"
            raise ModelError(f"{_at(where)}unknown key {_show(key)} (not one of {known}; this engine cannot tell "
                             "what it would change, so it is refused)")
    missing = [key for key in required if key not in raw]
    if missing:
        raise ModelError(f"{_at(where)}missing {', '.join(missing)}")
    return {key: schema[key](_child(where, key), value) for key, value in raw.items()}


#: Training augmentations bpreg's ModelSettings knows (its custom ones and albumentations').
TRANSFORMS = ("GaussNoise", "ShiftHU", "ScaleHU", "AddFrame", "Flip", "Transpose", "ShiftScaleRotate", "GaussianBlur")
_PARAMETER = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _transform_params(where: str, value: Any) -> dict[str, Any]:
    """``transform_params``: transform name -> keyword arguments (scalars or lists of numbers).
    Training-only: checked for shape, never read."""
    if not isinstance(value, Mapping):
        raise ModelError(f"{_at(where)}not a JSON object")
    for name, params in value.items():
        if name not in TRANSFORMS:
            raise ModelError(f"{_at(where)}unknown transform {_show(name)} (bpreg's: {', '.join(TRANSFORMS)})")
        if not isinstance(params, Mapping):
            raise ModelError(f"{_at(_child(where, name))}not a JSON object")
        for key, item in params.items():
            scalar = item is None or isinstance(item, bool | int | float)
            numbers = isinstance(item, list) and len(item) <= 8 and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in item)
            if not isinstance(key, str) or not _PARAMETER.fullmatch(key):
                raise ModelError(f"{_at(_child(where, name))}{_show(key)} is not a parameter name (lower case, digits, _)")
            if not (scalar or numbers):
                raise ModelError(f"{_at(_child(_child(where, name), key))}{_show(item)} is not a transform parameter "
                                 "(a number, true/false, null or a list of numbers)")
    return dict(value)


def _base_model(where: str, value: Any) -> str:
    if value != "vgg":
        raise ModelError(f"{_at(where)}{_show(value)} is not supported (only 'vgg', the network this engine builds)")
    return value


#: ``config.json``: bpreg's ModelSettings fields. Only ``base_model`` is read; the rest is checked for type.
CONFIG_SCHEMA: dict[str, Check] = {
    **{key: _text for key in ("df_data_source_path", "data_path", "landmark_path", "save_dir", "name", "model_name",
                               "model", "loss_order")},
    **{key: _int(0, 10**9) for key in ("batch_size", "effective_batch_size", "num_slices", "epochs", "random_seed")},
    **{key: _number() for key in ("alpha_h", "beta_h", "lambda_", "alpha", "lr")},
    **{key: _bool for key in ("shuffle_train_dataloader", "deterministic", "save_model")},
    "equidistance_range": _numbers(2),
    "transform_params": _transform_params,
    "base_model": _base_model,
}


def check_config(raw: Any, source: str = "config.json") -> dict[str, Any]:
    """Check ``config.json`` against :data:`CONFIG_SCHEMA`. No key is required (bpreg fills in its
    defaults, ``base_model`` ``vgg`` among them), but ``base_model``, if given, must be ``vgg``: the
    network of :mod:`mhub_cpu.convert.bodypart_network`.

    Raises:
        ModelError: an unknown key, a value of the wrong type, or another base model, by key path.
    """
    return _in_file(source, lambda: _closed("", raw, CONFIG_SCHEMA))


def _lookuptable(where: str, value: Any) -> dict[str, dict[str, float]]:
    """landmark -> {"mean": finite score, "std": score ≥ 0, or NaN where bpreg saw the landmark once}."""
    if not isinstance(value, Mapping) or not 2 <= len(value) <= MAX_LANDMARKS:
        raise ModelError(f"{_at(where)}not a look-up table of 2 to {MAX_LANDMARKS} landmarks")
    table = {}
    for name, entry in value.items():
        if not isinstance(name, str) or not LANDMARK_NAME.fullmatch(name):
            raise ModelError(f"{_at(where)}{_show(name)} is not a landmark name (letters, digits, _ and -)")
        table[name] = _closed(_child(where, name), entry, {"mean": _number(), "std": _number(0.0, finite=False)},
                              required=("mean", "std"))
    return table


def _lookuptables(where: str, value: Any) -> dict[str, dict[str, dict[str, float]]]:
    tables = _closed(where, value, {"original": _lookuptable, "transformed": _lookuptable}, required=("original", "transformed"))
    if set(tables["original"]) != set(tables["transformed"]):
        differ = sorted(set(tables["original"]) ^ set(tables["transformed"]))
        raise ModelError(f"{_at(where)}original and transformed name different landmarks ({', '.join(differ[:5])})")
    return tables


_QUANTILE = _number(0.0, 1.0)
_LANDMARK: Check = _text
SETTINGS_SCHEMA: dict[str, Check] = {
    "slope_mean": _number(1e-6, 1e3),
    "slope_median": _number(finite=False),
    "slope_std": _number(finite=False),
    "tangential_slope_mean": _number(finite=False),
    "upper_quantile_tangential_slope": _number(),
    "lower_quantile_tangential_slope": _number(),
    "lookuptable_train": _lookuptables,
    "lookuptable_train_val": _lookuptables,
    "settings": lambda where, value: _closed(
        where, value,
        {"upper_tangential_quantile": _QUANTILE, "lower_tangential_quantile": _QUANTILE,
         "start-landmark": _LANDMARK, "end-landmark": _LANDMARK},
        required=("start-landmark", "end-landmark")),
}
#: What inference reads (``lookuptable_train`` and the slope statistics besides ``slope_mean`` are not).
REQUIRED_SETTINGS = ("slope_mean", "upper_quantile_tangential_slope", "lower_quantile_tangential_slope",
                     "lookuptable_train_val", "settings")


def check_settings(raw: Any, needed_landmarks: set[str], source: str = "inference-settings.json") -> dict[str, Any]:
    """Check ``inference-settings.json`` against :data:`SETTINGS_SCHEMA` and its values against each other.

    Args:
        needed_landmarks: Landmarks post-processing looks up by name (bpreg's body-part tables):
            the look-up table must hold each.

    Raises:
        ModelError: naming the key path of the first refused value.
    """
    return _in_file(source, lambda: _check_settings(raw, needed_landmarks))


def _check_settings(raw: Any, needed_landmarks: set[str]) -> dict[str, Any]:
    checked = _closed("", raw, SETTINGS_SCHEMA, required=REQUIRED_SETTINGS)
    low, high = checked["lower_quantile_tangential_slope"], checked["upper_quantile_tangential_slope"]
    if not low < high:
        raise ModelError(f"lower_quantile_tangential_slope {low} is not below upper_quantile_tangential_slope {high}")
    original = checked["lookuptable_train_val"]["original"]
    for key in ("start-landmark", "end-landmark"):
        name = checked["settings"][key]
        if name not in original:
            raise ModelError(f"{_at('settings.' + key)}{_show(name)} is not a landmark of lookuptable_train_val")
    missing = sorted(needed_landmarks - set(original))
    if missing:
        raise ModelError(f"{_at('lookuptable_train_val')}lacks the landmarks {', '.join(missing)} "
                         "that body-part examination needs")
    return checked
