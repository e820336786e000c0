"""Model files: labels.csv, zip layout, catalogue resolution, download cache, OpenVINO conversion."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import LocalFileServer
from mhub_cpu.auto3dseg import bundle as bundle_module
from mhub_cpu.auto3dseg.bundle import load_bundle
from mhub_cpu.auto3dseg.catalog import CatalogEntry, find_entry
from mhub_cpu.auto3dseg.labels import format_labels_csv, parse_labels_csv
from mhub_cpu.cache import fetch, sha256_of
from mhub_cpu.conversion import convert_bundle
from mhub_cpu.errors import DownloadError, ModelError
from mhub_cpu.inference.precision import CpuCapabilities
from mhub_cpu.inference.runtime import OpenVinoNetwork


def test_demo_labels_carry_snomed_codes(demo_model: Path) -> None:
    bundle = load_bundle(demo_model)
    by_name = {label.name: label for label in bundle.labels}
    liver = by_name["Liver"]
    assert (liver.codes["type"].scheme, liver.codes["type"].value) == ("SCT", "10200004")
    left_kidney = by_name["Left Kidney"]
    assert left_kidney.codes["type"].value == "64033007"
    assert left_kidney.codes["type_modifier"].value == "7771000"
    assert all(label.color for label in bundle.labels)


def test_labels_csv_round_trip(demo_model: Path) -> None:
    labels = load_bundle(demo_model).labels
    assert parse_labels_csv(format_labels_csv(labels)) == [l.__class__(l.value, l.name, l.codes) for l in labels]


@pytest.mark.parametrize(
    "text,message",
    [("", "empty"), ("Name\nLiver\n", "LabelValue"), ("LabelValue,Name\nx,Liver\n", "not an integer"),
     ("LabelValue,Name\n1,A\n1,B\n", "repeats")],
)
def test_bad_labels_csv(text: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        parse_labels_csv(text)


def test_zip_without_labels_csv(tmp_path: Path, demo_model: Path) -> None:
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(demo_model) as source, zipfile.ZipFile(broken, "w") as target:
        target.writestr("model/model.pt", source.read("model/model.pt"))
    with pytest.raises(ModelError, match="no labels.csv"):
        load_bundle(broken)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_bundle(tmp_path / "absent.zip")
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        load_bundle("no-such-model")


def test_catalogue_resolves_names_to_current_versions() -> None:
    entry = find_entry("abdominal-organs")
    assert entry.id == "abdominal-organs-v2.0.0" and not entry.deprecated
    assert entry.url.endswith("/abdominal-organs-v2.0.0.zip")
    assert find_entry("abdominal-organs-v2.0.0") == entry


def test_download_once_then_offline(tmp_path: Path, demo_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MHUB_CPU_CACHE", str(tmp_path / "cache"))
    served = tmp_path / "served"
    served.mkdir()
    (served / "tiny-model-v1.0.0.zip").write_bytes(demo_model.read_bytes())
    with LocalFileServer(served) as server:
        url = server.url("tiny-model-v1.0.0.zip")
        entry = CatalogEntry("tiny-model-v1.0.0", "tiny-model", "1.0.0", "Tiny", url, None, "", False, False, None, {})
        monkeypatch.setattr(bundle_module, "find_entry", lambda name: entry)
        first = load_bundle("tiny-model")
        assert server.requests == 1
        record = json.loads((tmp_path / "cache" / "models" / "tiny-model-v1.0.0.zip.json").read_text())
        assert record["sha256"] == sha256_of(demo_model) and record["url"] == url
    # server gone: the cached copy is used without network
    second = load_bundle("tiny-model")
    assert second.checkpoint_sha256 == first.checkpoint_sha256
    assert server.requests == 1


def test_download_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MHUB_CPU_CACHE", str(tmp_path / "cache"))
    served = tmp_path / "served"
    served.mkdir()
    (served / "m.zip").write_bytes(b"payload")
    with LocalFileServer(served) as server:
        with pytest.raises(DownloadError, match="checksum mismatch"):
            fetch(server.url("m.zip"), "models", expected_sha256="0" * 64)
        with pytest.raises(DownloadError, match="cannot download"):
            fetch(server.url("missing.zip"), "models")
    assert not list((tmp_path / "cache" / "models").glob("*.zip")), "no partial file looks cached"
    with pytest.raises(DownloadError, match="offline"):
        fetch(server.url("m.zip"), "models", timeout_s=2)


@pytest.mark.parametrize("ir_variant,precision", [("fp32", "f32"), ("fp32", "bf16"), ("fp16", "f32")])
def test_conversion_and_precision_modes(demo_model: Path, ir_variant: str, precision: str) -> None:
    import torch

    from mhub_cpu.conversion import load_checkpoint, network_from_config

    bundle = load_bundle(demo_model)
    converted = convert_bundle(bundle, ir_variant)
    assert converted.xml_path.exists()
    assert convert_bundle(bundle, ir_variant).xml_path == converted.xml_path, "cached"
    if not CpuCapabilities.query().supports(precision):  # e.g. bf16 on an AVX2-only CPU
        with pytest.raises(ModelError, match=f"{precision} is not supported by this CPU"):
            OpenVinoNetwork(converted.xml_path, precision, threads=2)
        return
    network = OpenVinoNetwork(converted.xml_path, precision, threads=2)
    assert network.ran.compute_hint == precision
    if ir_variant == "fp32":  # fp16 weights may show as f16 layers (weights read in f16) on CPUs with FP16
        assert network.ran.precisions().keys() == {precision}, network.ran.layers
    rng = np.random.default_rng(0)
    window = rng.uniform(0, 1, size=converted.config["roi_size"]).astype(np.float32)
    ours = network(window)
    config, state = load_checkpoint(bundle.checkpoint_bytes)
    torch_net = network_from_config(config)
    torch_net.load_state_dict(state)
    torch_net.eval()
    with torch.no_grad():
        expected = torch_net(torch.from_numpy(window)[None, None])
        expected = (expected[0] if isinstance(expected, list) else expected)[0].numpy()
    scale = np.abs(expected).max()
    tolerance = 1e-3 if precision == "f32" and ir_variant == "fp32" else 0.1
    assert np.abs(ours - expected).max() / scale < tolerance
    assert (ours.argmax(0) == expected.argmax(0)).mean() > (0.999 if tolerance < 0.01 else 0.97)


def test_unknown_precision_is_refused(demo_model: Path) -> None:
    converted = convert_bundle(load_bundle(demo_model), "fp32")
    with pytest.raises(ModelError, match="unknown compute precision"):
        OpenVinoNetwork(converted.xml_path, "f8")
