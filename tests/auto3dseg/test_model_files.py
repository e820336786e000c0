"""Model files: labels.csv, zip layout, catalogue resolution, download cache, OpenVINO conversion."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from conftest import LocalFileServer
from mhub_cpu.auto3dseg import bundle as bundle_module
from mhub_cpu.auto3dseg.bundle import load_bundle
from mhub_cpu.auto3dseg.catalog import CatalogEntry, find_entry
from mhub_cpu.auto3dseg.labels import format_labels_csv, parse_labels_csv
from mhub_cpu.core.cache import fetch, sha256_of
from mhub_cpu.core.errors import DownloadError, ModelError


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
    assert parse_labels_csv(format_labels_csv(labels)) == [type(label)(label.value, label.name, label.codes) for label in labels]


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
