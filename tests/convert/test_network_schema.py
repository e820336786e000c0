"""Checkpoint configs are data: the network is built from a closed schema, never by evaluating the file."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from mhub_cpu.auto3dseg.network_schema import check_config, network_spec
from mhub_cpu.convert.auto3dseg import network_from_config
from mhub_cpu.core.errors import ModelError


def demo_checkpoint(demo_model: Path) -> dict[str, Any]:
    with zipfile.ZipFile(demo_model) as archive:
        return torch.load(io.BytesIO(archive.read("model/model.pt")), map_location="cpu", weights_only=True)


def hostile_zip(demo_model: Path, target: Path, edit) -> Path:
    """The demo model with its checkpoint changed by ``edit(checkpoint)``."""
    checkpoint = demo_checkpoint(demo_model)
    edit(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with zipfile.ZipFile(demo_model) as source, zipfile.ZipFile(target, "w") as out:
        out.writestr("model/labels.csv", source.read("model/labels.csv"))
        out.writestr("model/model.pt", buffer.getvalue())
    return target


def convert(model: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mhub_cpu.cli", "convert", "--model", str(model), "--precision", "f32", *extra],
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def set_in_network(key: str, value: Any):
    def edit(checkpoint: dict) -> None:
        checkpoint["config"]["network"][key] = value
    return edit


def set_in_config(key: str, value: Any):
    def edit(checkpoint: dict) -> None:
        checkpoint["config"][key] = value
    return edit


def nan_weights(checkpoint: dict) -> None:
    name = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())
    checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], float("nan"))


CASES = {
    "a _target_ that runs a command": (set_in_network("norm", {"_target_": "subprocess.getoutput", "cmd": "touch {marker}"}),
                                       "config.network.norm: '_target_' is not allowed"),
    "an expression that runs a command": (set_in_network("init_filters", "$__import__('os').system('touch {marker}') or 8"),
                                          "config.network.init_filters: \"$__import__"),
    "a reference": (set_in_network("out_channels", "@output_classes"), "config.network.out_channels: '@output_classes' is an expression"),
    "an import": (set_in_network("act", "%configs/evil.yaml"), "config.network.act: '%configs/evil.yaml' is an expression"),
    "another architecture": (set_in_network("_target_", "torch.nn.Identity"), "'torch.nn.Identity' is not a known architecture"),
    "an unknown key": (set_in_network("preprocess", "anything"), "config.network.preprocess: not a parameter of SegResNetDS"),
    "a zero-sized window": (set_in_config("roi_size", [0, 96, 96]), "config.roi_size[0]: 0 is not an integer in [1, 1024]"),
    "a window the network cannot halve": (set_in_config("roi_size", [96, 96, 90]), "config.roi_size: [96, 96, 90] is not divisible by 8"),
    "output classes against the network": (set_in_config("output_classes", 3), "config.output_classes: 3, but config.network.out_channels is 24"),
    "a norm layer with foreign arguments": (set_in_network("norm", ["INSTANCE", {"cmd": 1}]), "'cmd' is not an argument of the INSTANCE"),
    "a boolean as a number": (set_in_network("init_filters", True), "config.network.init_filters: True is not an integer"),
    "NaN weights": (nan_weights, "the checkpoint's weights are broken: "),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_config_is_refused_before_anything_is_built(case: str, demo_model: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    edit, message = CASES[case]

    def edit_with_marker(checkpoint: dict) -> None:
        edit(checkpoint)
        network = checkpoint["config"]["network"]
        for key, value in list(network.items()):
            if isinstance(value, str):
                network[key] = value.replace("{marker}", str(marker))
            elif isinstance(value, dict) and "cmd" in value:
                network[key] = {**value, "cmd": value["cmd"].replace("{marker}", str(marker))}

    model = hostile_zip(demo_model, tmp_path / "hostile-v0.1.0.zip", edit_with_marker)
    result = convert(model)
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and message.replace("{marker}", str(marker)) in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists(), "the payload ran"


def test_labels_must_match_the_network_outputs(demo_model: Path) -> None:
    config = demo_checkpoint(demo_model)["config"]
    assert check_config(config, label_count=23).out_channels == 24
    with pytest.raises(ModelError, match="labels.csv has 22 labels, but the network has 24 outputs"):
        check_config(config, label_count=22)


def test_nothing_outside_the_network_and_the_read_keys_is_looked_at(demo_model: Path) -> None:
    """A trainer's own expressions elsewhere in the config are never read, so they do not matter."""
    config = copy.deepcopy(demo_checkpoint(demo_model)["config"])
    config["ckpt_path"] = "$@bundle_root + '/model'"
    check_config(config, label_count=23)


def test_the_schema_builds_the_network_the_config_parser_built(demo_model: Path) -> None:
    checkpoint = demo_checkpoint(demo_model)
    ours = network_from_config(checkpoint["config"])
    theirs = network_from_config(checkpoint["config"], trust=True)
    assert type(ours) is type(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == list(checkpoint["state_dict"])
    ours.load_state_dict(checkpoint["state_dict"], strict=True)


@pytest.mark.parametrize("network,message", [
    ({"_target_": "monai.networks.nets.SegResNet", "blocks_down": [1, 2], "blocks_up": [1, 1]}, "blocks_up: 2 entries, but blocks_down has 2"),
    ({"_target_": "SegResNetDS", "blocks_down": [1, 2], "dsdepth": 3}, "dsdepth: 3 is deeper than the network's 2 levels"),
    ({"_target_": "SegResNetDS", "norm": "SPECTRAL"}, "'SPECTRAL' is not a normalisation layer"),
    ({"_target_": "SegResNetDS", "upsample_mode": "eval"}, "upsample_mode: 'eval' is not one of deconv"),
    ({"_target_": "SegResNetDS", "in_channels": 4}, "in_channels: 4 is not an integer in [1, 1]"),
    ([1, 2], "has no network description"),
])
def test_architecture_parameters_are_checked_by_name(network: Any, message: str) -> None:
    with pytest.raises(ModelError, match=message.replace("[", r"\[").replace("]", r"\]")):
        network_spec(network)


def test_the_prefixed_architecture_names_are_known() -> None:
    spec = network_spec({"_target_": "monai.networks.nets.SegResNetDS", "blocks_down": [1, 2, 2, 4, 4], "norm": ["GROUP", {"num_groups": 8}]})
    assert spec.architecture == "SegResNetDS" and spec.size_divisor == 16
    assert spec.kwargs["norm"] == ("GROUP", {"num_groups": 8})


def test_trust_model_is_the_way_past_the_schema(demo_model: Path, tmp_path: Path) -> None:
    model = hostile_zip(demo_model, tmp_path / "extra-v0.1.0.zip", set_in_network("spatial_dims", "$3"))
    refused = convert(model)
    assert refused.returncode == 3 and "config.network.spatial_dims" in refused.stderr
    trusted = convert(model, "--trust-model")
    assert trusted.returncode == 0, trusted.stderr
    assert "--trust-model" in trusted.stderr and "ConfigParser" in trusted.stderr


def test_trust_model_still_checks_the_values_inference_reads(demo_model: Path, tmp_path: Path) -> None:
    """--trust-model gives up the closed network schema, not the checks of roi_size and the like."""
    model = hostile_zip(demo_model, tmp_path / "zero-v0.1.0.zip", set_in_config("roi_size", [0, 96, 96]))
    result = convert(model, "--trust-model")
    assert result.returncode == 3, result.stderr
    assert "config.roi_size[0]: 0 is not an integer in [1, 1024]" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("value,message", [
    ([164.0, -57.5], "config.intensity_bounds: [164.0, -57.5] is not an increasing pair"),
    ("$[0, 1]", "config.intensity_bounds: '$[0, 1]' is not a list of 2 numbers"),
    ([float("nan"), 1.0], "config.intensity_bounds[0]: nan is not a number"),
])
def test_intensity_bounds_are_checked(demo_model: Path, value: Any, message: str) -> None:
    config = copy.deepcopy(demo_checkpoint(demo_model)["config"])
    config["intensity_bounds"] = value
    with pytest.raises(ModelError) as refused:
        check_config(config, label_count=23)
    assert message in str(refused.value)


def test_a_labels_csv_that_does_not_match_the_outputs_is_refused_also_when_trusted(demo_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "short-v0.1.0.zip"
    with zipfile.ZipFile(demo_model) as source, zipfile.ZipFile(model, "w") as out:
        lines = source.read("model/labels.csv").decode().splitlines()
        out.writestr("model/labels.csv", "\n".join(lines[:-1]) + "\n")  # 22 labels for 24 outputs
        out.writestr("model/model.pt", source.read("model/model.pt"))
    for extra in ((), ("--trust-model",)):
        result = convert(model, *extra)
        assert result.returncode == 3, result.stderr
        assert "labels.csv has 22 labels, but the network has 24 outputs" in result.stderr, result.stderr


# --- the bodypart model's config.json and inference-settings.json -------------------------------------------------

from mhub_cpu.bodypart.model_schema import check_settings  # noqa: E402
from mhub_cpu.bodypart.modelfiles import needed_landmarks, open_model_dir  # noqa: E402
from mhub_cpu_dev.standins.bodypart import PUBLIC_CONFIG, inference_settings  # noqa: E402


@pytest.fixture(scope="module")
def bodypart_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bpreg's state_dict keys and shapes, zero-filled (the schema tests never run the network)."""
    from mhub_cpu.convert.bodypart_network import BodyPartRegressionNet

    path = tmp_path_factory.mktemp("bpreg") / "model.pt"
    torch.save({k: torch.zeros_like(v) for k, v in BodyPartRegressionNet().state_dict().items()}, path)
    return path


def bodypart_dir(root: Path, weights: Path, config: dict | None = None, settings: dict | None = None) -> Path:
    """A model directory in the public layout: the stand-in's JSON files (or the given ones) beside ``weights``."""
    import json
    import os

    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(PUBLIC_CONFIG if config is None else config))
    (root / "inference-settings.json").write_text(json.dumps(inference_settings(-1.0, 1.0) if settings is None else settings))
    os.link(weights, root / "model.pt")
    return root


def bodypart_convert(model: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mhub_cpu.cli", "bodypart-convert", "--model", str(model)],
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def edited(base: dict, path: str, value: Any) -> dict:
    """A copy of ``base`` (as its JSON file holds it: shared sub-objects are separate) with the value at
    the ``/``-separated ``path`` set; ``...`` deletes it."""
    import json

    result = json.loads(json.dumps(base))
    *parents, last = path.split("/")
    target = result
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return result


SETTINGS = inference_settings(-1.0, 1.0)
BODYPART_CASES = {
    "an unknown config key": ("config", "hook", "python -c 1", "config.json: unknown key 'hook' (not one of the 24 keys bpreg writes"),
    "another base model": ("config", "base_model", "resnet", "config.json: base_model: 'resnet' is not supported (only 'vgg'"),
    "a string batch size": ("config", "batch_size", "64", "config.json: batch_size: '64' is not an integer"),
    "an unknown transform": ("config", "transform_params/Elastic", {"p": 0.5}, "transform_params: unknown transform 'Elastic'"),
    "a nested transform parameter": ("config", "transform_params/Flip/p", {"_target_": "os.system"}, "transform_params.Flip.p: "),
    "an unknown settings key": ("settings", "exec", "rm -rf /", "inference-settings.json: unknown key 'exec'"),
    "a zero slope": ("settings", "slope_mean", 0, "inference-settings.json: slope_mean: 0 is not a finite number in [1e-06, 1000.0]"),
    "a NaN slope": ("settings", "slope_mean", float("nan"), "slope_mean: nan is not a finite number"),
    "a string slope": ("settings", "slope_mean", "0.118", "slope_mean: '0.118' is not a finite number"),
    "a missing slope": ("settings", "slope_mean", ..., "inference-settings.json: missing slope_mean"),
    "swapped slope quantiles": ("settings", "lower_quantile_tangential_slope", 0.3,
                                "lower_quantile_tangential_slope 0.3 is not below upper_quantile_tangential_slope 0.25"),
    "an unknown landmark setting": ("settings", "settings/start-landmark", "knee", "settings.start-landmark: 'knee' is not a landmark"),
    "a quantile above 1": ("settings", "settings/upper_tangential_quantile", 1.5, "settings.upper_tangential_quantile: 1.5 is not a finite number in [0.0, 1.0]"),
    "an extra key in a landmark": ("settings", "lookuptable_train_val/original/L3/cmd", "x",
                                   "lookuptable_train_val.original.L3: unknown key 'cmd' (not one of mean, std"),
    "a NaN landmark mean": ("settings", "lookuptable_train_val/transformed/Th9/mean", float("nan"),
                            "lookuptable_train_val.transformed.Th9.mean: nan is not a finite number"),
    "a negative spread": ("settings", "lookuptable_train_val/transformed/Th9/std", -1.0, "Th9.std: -1.0 is not a finite number in [0.0, inf]"),
    "a landmark name with spaces": ("settings", "lookuptable_train_val/original/x y", {"mean": 0.0, "std": 1.0},
                                    "'x y' is not a landmark name"),
}


@pytest.mark.parametrize("case", list(BODYPART_CASES))
def test_a_bad_bodypart_model_file_is_refused_by_key(case: str, bodypart_weights: Path, tmp_path: Path) -> None:
    which, path, value, message = BODYPART_CASES[case]
    config = edited(PUBLIC_CONFIG, path, value) if which == "config" else None
    settings = edited(SETTINGS, path, value) if which == "settings" else None
    if case == "a landmark name with spaces":  # the same landmark in both tables, so that only its name is wrong
        settings = edited(settings, "lookuptable_train_val/transformed/x y", value)
    model = bodypart_dir(tmp_path / "model", bodypart_weights, config, settings)
    result = bodypart_convert(model)
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert str(model) in lines[0] and "Traceback" not in result.stderr


def test_a_lookup_table_without_the_landmarks_post_processing_needs_is_refused() -> None:
    settings = copy.deepcopy(SETTINGS)
    for table in settings["lookuptable_train_val"].values():
        del table["Th9"]
    with pytest.raises(ModelError, match="lookuptable_train_val: lacks the landmarks Th9 that body-part examination needs"):
        check_settings(settings, needed_landmarks())
    assert {"pelvis_start", "L5", "Th9", "Th2"} <= needed_landmarks()


def test_the_bodypart_stand_in_passes_and_reads_as_before(bodypart_weights: Path, tmp_path: Path) -> None:
    model = open_model_dir(bodypart_dir(tmp_path / "model", bodypart_weights))
    assert model.config == PUBLIC_CONFIG
    original = SETTINGS["lookuptable_train_val"]["original"]
    assert model.settings.lookuptable_original == original
    assert model.settings.lookuptable == SETTINGS["lookuptable_train_val"]["transformed"]
    assert (model.settings.transform_min, model.settings.transform_max) == (original["pelvis_start"]["mean"], original["eyes_end"]["mean"])
    assert (model.settings.slope_mean, model.settings.tangential_slope_min, model.settings.tangential_slope_max) == (0.118, -0.037, 0.25)
    minimal = {"base_model": "vgg"}  # bpreg fills in its defaults for the training fields
    assert open_model_dir(bodypart_dir(tmp_path / "minimal", bodypart_weights, config=minimal)).config == minimal


def test_a_deeply_nested_json_is_a_model_error(bodypart_weights: Path, tmp_path: Path) -> None:
    model = bodypart_dir(tmp_path / "model", bodypart_weights)
    (model / "inference-settings.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelError, match="inference-settings.json: JSON nested too deeply"):
        open_model_dir(model)


def test_bodypart_weights_with_nan_or_a_pickled_payload_are_refused(tmp_path: Path) -> None:
    from mhub_cpu.convert.bodypart_network import BodyPartRegressionNet

    state = {k: torch.zeros_like(v) for k, v in BodyPartRegressionNet().state_dict().items()}
    state["model.10.weight"][0, 0, 0, 0] = float("inf")
    weights = tmp_path / "nan.pt"
    torch.save(state, weights)
    result = bodypart_convert(bodypart_dir(tmp_path / "nan", weights))
    assert result.returncode == 3, result.stderr
    assert "the weights are broken: model.10.weight holds 1 NaN or infinite values of" in result.stderr, result.stderr

    marker = tmp_path / "payload-ran"

    class WritesAFile:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    hostile = tmp_path / "hostile.pt"
    torch.save({**state, "payload": WritesAFile()}, hostile)
    result = bodypart_convert(bodypart_dir(tmp_path / "hostile", hostile))
    assert result.returncode == 3, result.stderr
    assert "holds more than tensors, and unpickling it could run code" in result.stderr, result.stderr
    assert not marker.exists(), "the payload ran"
