"""The bodypart subcommand and the model download path (zip over HTTP on 127.0.0.1, then offline)."""

from __future__ import annotations

import argparse
import csv
import functools
import http.server
import json
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from mhub_cpu.bodypart.modelfiles import resolve_model
from mhub_cpu.cli.bodypart import register
from mhub_cpu.core.errors import DownloadError, ModelError
from mhub_cpu_dev.standins.bodypart import random_state_dict, write_model_dir

SHARED = REPO / "data"
CT_NIFTI = SHARED / "ct" / "abdomen_3mm.nii.gz"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="mhub-cpu")
    register(root.add_subparsers(dest="command", required=True))
    return root


@pytest.fixture()
def served_zip(tmp_path, monkeypatch):
    """A model zip laid out like Zenodo's (public_bpr_model/...) served on 127.0.0.1."""
    monkeypatch.setenv("MHUB_CPU_CACHE", str(tmp_path / "cache"))
    model = write_model_dir(tmp_path / "src" / "public_bpr_model", random_state_dict(0))
    site = tmp_path / "site"
    site.mkdir()
    with zipfile.ZipFile(site / "public_bpr_model.zip", "w") as zf:
        for file in model.iterdir():
            zf.write(file, f"public_bpr_model/{file.name}")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/public_bpr_model.zip", server
    server.shutdown()


def test_download_once_then_offline(served_zip):
    url, server = served_zip
    first = resolve_model(url)
    assert sorted(p.name for p in first.path.iterdir()) == ["config.json", "inference-settings.json", "model.pt"]
    assert first.settings.start_landmark == "pelvis_start"
    server.shutdown()
    server.server_close()
    assert resolve_model(url).path == first.path  # from the cache, no server


def test_download_failure_is_a_download_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MHUB_CPU_CACHE", str(tmp_path))
    with pytest.raises(DownloadError, match="cannot download"):
        resolve_model("http://127.0.0.1:9/public_bpr_model.zip")


def test_bodypart_command_writes_results(tmp_path, monkeypatch):
    monkeypatch.setenv("MHUB_CPU_CACHE", str(tmp_path / "cache"))
    model = write_model_dir(tmp_path / "model", random_state_dict(0))
    args = parser().parse_args(["bodypart", "--input", str(CT_NIFTI), "--output", str(tmp_path / "out"), "--model", str(model), "--precision", "f32"])
    assert args.func(args) == 0
    qa = json.loads((tmp_path / "out" / "qa.json").read_text())
    assert qa["status"] == "ok" and qa["model"]["precision"] == "f32"
    assert (tmp_path / "out" / "bpreg.json").exists()
    assert not (tmp_path / "out" / "bpr_landmarks_sr.dcm").exists()  # NIfTI input: nothing to reference


def test_missing_model_writes_error_record(tmp_path):
    args = parser().parse_args(["bodypart", "--input", str(CT_NIFTI), "--output", str(tmp_path / "out"), "--model", str(tmp_path / "nope")])
    with pytest.raises(ModelError, match="lacks config.json"):
        args.func(args)
    qa = json.loads((tmp_path / "out" / "qa.json").read_text())
    assert qa["status"] == "error" and qa["error"]["exit_code"] == 3


def test_precision_choices_are_those_body_part_regression_offers():
    assert parser().parse_args(["bodypart", "--input", "x", "--output", "y", "--precision", "bf16"]).precision == "bf16"
    with pytest.raises(SystemExit):
        parser().parse_args(["bodypart", "--input", "x", "--output", "y", "--precision", "fp16"])


def test_idc_code_table_is_generated_from_the_source_table(tmp_path):
    repo = REPO
    subprocess.run([sys.executable, str(repo / "scripts" / "build_bodypart_codes.py"), "--output", str(tmp_path / "codes.json")], check=True)
    assert (tmp_path / "codes.json").read_bytes() == (repo / "configs" / "bodypart" / "idc_bpr_codes.json").read_bytes()
    codes = json.loads((tmp_path / "codes.json").read_text())
    with open(SHARED / "codes" / "idc_bpr" / "bpr_landmarks_code_mapping.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert set(codes["landmarks"]) == {row["BPR_code"] for row in rows}
    assert all(codes["landmarks"][r["BPR_code"]]["site"]["value"] == r["CodeValue"] for r in rows)


def test_bodypart_convert_prints_the_cached_ir(tmp_path, capsys):
    """The public command the bpreg image converts with (f32 and INT8 at build time)."""
    model_dir = write_model_dir(tmp_path / "model", random_state_dict(seed=0))
    args = parser().parse_args(["bodypart-convert", "--model", str(model_dir), "--precision", "f32"])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["precision"] == {"mode": "f32", "ir": "fp32", "compute": "f32"}
    assert Path(printed["ir"]).exists() and len(printed["weights_sha256"]) == 64
