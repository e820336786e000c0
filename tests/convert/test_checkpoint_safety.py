"""Model files are code: checkpoints load without running pickled code; downloads and the cache are verified."""

from __future__ import annotations

import builtins
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import LocalFileServer
from mhub_cpu.auto3dseg import bundle as bundle_module
from mhub_cpu.auto3dseg import catalog
from mhub_cpu.auto3dseg.bundle import load_bundle
from mhub_cpu.auto3dseg.catalog import CatalogEntry
from mhub_cpu.convert.checkpoint import load_checkpoint
from mhub_cpu.core.cache import fetch
from mhub_cpu.core.errors import DownloadError, ModelError


class WritesAFile:
    """Unpickling this runs ``exec``: it writes a file, as a hostile checkpoint could do anything."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.path)!r}, 'w').write('ran')",))


def checkpoint_bytes(demo_model: Path, **extra_config: object) -> bytes:
    """The demo checkpoint (production layout) with extra values in its config."""
    with zipfile.ZipFile(demo_model) as archive:
        original = torch.load(io.BytesIO(archive.read("model/model.pt")), map_location="cpu", weights_only=True)
    original["config"] = {**original["config"], **extra_config}
    buffer = io.BytesIO()
    torch.save(original, buffer)
    return buffer.getvalue()


def model_zip(demo_model: Path, target: Path, checkpoint: bytes) -> Path:
    with zipfile.ZipFile(demo_model) as source, zipfile.ZipFile(target, "w") as out:
        out.writestr("model/labels.csv", source.read("model/labels.csv"))
        out.writestr("model/model.pt", checkpoint)
    return target


def test_production_checkpoints_load_with_the_safe_loader(demo_model: Path) -> None:
    with zipfile.ZipFile(demo_model) as archive:
        config, state = load_checkpoint(archive.read("model/model.pt"))
    assert "network" in config and all(isinstance(v, torch.Tensor) for v in state.values())
    config, _ = load_checkpoint(checkpoint_bytes(demo_model, intensity_bounds=[-57.5, 164.0], roi_size=(96, 96, 96)))
    assert config["intensity_bounds"] == [-57.5, 164.0], "plain YAML values, as the Auto3DSeg trainer saves them"


def test_types_outside_the_allow_list_are_named(demo_model: Path) -> None:
    with pytest.raises(ModelError, match=r"model\.pt holds [^;]*numpy\.[^;]*(_reconstruct|ndarray)[^;]*, which an Auto3DSeg checkpoint does not need"):
        load_checkpoint(checkpoint_bytes(demo_model, spacing=np.array([0.8, 0.8, 2.5])))


def test_a_pickled_payload_is_refused_and_never_runs(demo_model: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    hostile = checkpoint_bytes(demo_model, payload=WritesAFile(marker))
    with pytest.raises(ModelError) as refused:
        load_checkpoint(hostile)
    assert not marker.exists(), "the payload ran"
    message = str(refused.value)
    assert "model.pt holds builtins.exec, which an Auto3DSeg checkpoint does not need" in message
    assert "pass --trust-model" in message
    load_checkpoint(hostile, trust=True)
    assert marker.read_text() == "ran", "--trust-model loads with the full unpickler (which is why it is not the default)"


def test_convert_refuses_a_hostile_zip_unless_trusted(demo_model: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    zip_path = model_zip(demo_model, tmp_path / "hostile-v1.0.0.zip", checkpoint_bytes(demo_model, payload=WritesAFile(marker)))
    command = [sys.executable, "-m", "mhub_cpu.cli", "convert", "--model", str(zip_path)]
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode == 3 and not marker.exists()
    assert refused.stderr.strip().splitlines()[-1].startswith("mhub-cpu: error: model.pt holds builtins.exec")
    trusted = subprocess.run([*command, "--trust-model"], capture_output=True, text=True)
    assert trusted.returncode == 0, trusted.stderr
    assert "full unpickler (--trust-model)" in trusted.stderr and marker.exists()
    printed = json.loads(trusted.stdout)
    assert printed["checkpoint_sha256"] and printed["source_sha256"] and printed["sha256_known"] is False


def test_a_known_hash_is_the_default_check(demo_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "auto3dseg_models.json").write_text((catalog.configs_dir() / "auto3dseg_models.json").read_text())
    (configs / "auto3dseg_model_sha256.json").write_text(json.dumps({"sha256": {"abdominal-organs-v2.0.0": "AB" * 32}}))
    monkeypatch.setenv("MHUB_CPU_CONFIGS", str(configs))
    catalog.load_catalog.cache_clear()
    try:
        entry = catalog.find_entry("abdominal-organs")
        assert entry.sha256 == "ab" * 32, "the table of known hashes reaches the catalogue entry"
        monkeypatch.setenv("MHUB_CPU_CACHE", str(tmp_path / "cache"))
        served = tmp_path / "served"
        served.mkdir()
        (served / "m.zip").write_bytes(demo_model.read_bytes())
        with LocalFileServer(served) as server:
            served_entry = CatalogEntry(entry.id, entry.name, entry.version, entry.title, server.url("m.zip"), entry.sha256,
                                        "", False, False, None, {})
            monkeypatch.setattr(bundle_module, "find_entry", lambda name: served_entry)
            with pytest.raises(DownloadError, match="checksum mismatch"):
                load_bundle("abdominal-organs")
        assert not list((tmp_path / "cache" / "models").glob("m.zip*")), "nothing refused is cached"
    finally:
        catalog.load_catalog.cache_clear()


def test_a_tampered_cached_zip_is_detected(demo_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("MHUB_CPU_CACHE", str(tmp_path / "cache"))
    served = tmp_path / "served"
    served.mkdir()
    (served / "m.zip").write_bytes(demo_model.read_bytes())
    with LocalFileServer(served) as server:
        cached = fetch(server.url("m.zip"), "models")
        cached.write_bytes(cached.read_bytes() + b"tampered")
        again = fetch(server.url("m.zip"), "models")
        assert again.read_bytes() == demo_model.read_bytes() and server.requests == 2
        assert "was changed or corrupted since" in capsys.readouterr().err
        url = server.url("m.zip")
    cached.write_bytes(b"replaced")
    with pytest.raises(DownloadError, match=r"does not match the sha256 .* recorded when it was downloaded: it was changed"):
        fetch(url, "models", timeout_s=2)
