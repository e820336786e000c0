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
