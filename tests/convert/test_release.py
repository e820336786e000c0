"""Pre-converted IRs from a release: built by the release builder in the test, served on 127.0.0.1.

A run without PyTorch (``torch`` made unimportable in the child) takes the released IR after checking
every digest; a tampered asset, an IR of another OpenVINO major version and a missing asset are
refused with a line naming the cause and ``pip install 'mhub-cpu[convert]'`` (with PyTorch present, a
local conversion follows instead); ``--no-download`` never asks the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CT_NIFTI, LocalFileServer
from mhub_cpu.convert.release import MANIFEST, packaged_release, parse_manifest
from mhub_cpu.core.errors import ModelError
from mhub_cpu_dev.release import build_release
from mhub_cpu_dev.standins.auto3dseg import write_tiny_model

#: Runs the CLI in a child where ``import torch`` fails, as in an install without the convert extra.
WITHOUT_TORCH = "import sys; sys.modules['torch'] = None; from mhub_cpu.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release of the tiny stand-in (fp32 and fp16), converted in a cache of its own."""
    root = tmp_path_factory.mktemp("release")
    model = write_tiny_model(root / "models" / "tiny-standin-v0.1.0.zip")
    saved = dict(os.environ)
    os.environ.update(MHUB_CPU_NO_RELEASE="1", MHUB_CPU_CACHE=str(root / "builder-cache"))
    try:
        from mhub_cpu.runtime.precision import IrFormat

        build_release([str(model)], [IrFormat.FP32, IrFormat.FP16], root / "assets", verify=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return root


def engine(release: Path, cache: Path, *args: str, torch: bool = False, download: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "MHUB_CPU_CACHE": str(cache), "MHUB_CPU_NO_DOWNLOAD": "0" if download else "1"}
    command = [sys.executable, "-m", "mhub_cpu.cli"] if torch else [sys.executable, "-c", WITHOUT_TORCH]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)


def served(release: Path, tmp_path: Path) -> Path:
    """A copy of the release's assets to serve (and tamper with)."""
    return Path(shutil.copytree(release / "assets", tmp_path / "served"))


def test_the_manifest_lists_every_asset_with_its_digest(release: Path) -> None:
    assets = release / "assets"
    entries = parse_manifest((assets / MANIFEST).read_bytes(), "test")
    assert sorted(e.ir for e in entries) == ["fp16", "fp32"]
    for entry in entries:
        assert set(entry.files) == {"model.xml", "model.bin", "model_config.json", "release.json"}
        for asset in entry.files.values():
            data = (assets / asset.name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == asset.sha256 and len(data) == asset.size
        sidecar = json.loads((assets / entry.files["release.json"].name).read_text())
        assert sidecar["checkpoint_sha256"] == entry.checkpoint_sha256 and sidecar["ir"] == entry.ir
        assert sidecar["ir_sha256"]["model.bin"] == entry.files["model.bin"].sha256 and sidecar["openvino"] == entry.openvino


def test_a_run_without_torch_uses_the_downloaded_ir(release: Path, tmp_path: Path) -> None:
    model = release / "models" / "tiny-standin-v0.1.0.zip"
    with LocalFileServer(served(release, tmp_path)) as server:
        result = engine(release, tmp_path / "cache", "segment", "--input", str(CT_NIFTI), "--output", str(tmp_path / "out"),
                        "--model", str(model), "--precision", "f32", "--release-url", server.url(""))
        assert result.returncode == 0, result.stderr
        assert "from the release at http://127.0.0.1:" in result.stderr and "converting" not in result.stderr
        assert server.requests == 1 + 4  # the manifest, then the four files of the fp32 entry
        again = engine(release, tmp_path / "cache", "segment", "--input", str(CT_NIFTI), "--output", str(tmp_path / "again"),
                       "--model", str(model), "--precision", "f32", "--release-url", server.url(""))
        assert again.returncode == 0 and server.requests == 5, "cached: not downloaded again"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    ir = Path(report["inference"]["ir"])
    manifest = json.loads((release / "assets" / MANIFEST).read_text())
    fp32 = next(m for m in manifest["models"] if m["ir"] == "fp32")
    assert hashlib.sha256((ir.parent / "model.bin").read_bytes()).hexdigest() == fp32["files"]["model.bin"]["sha256"]


@pytest.mark.parametrize("damage", ["tampered", "other_openvino", "missing"])
def test_a_release_that_does_not_fit_is_refused_without_torch_and_converted_with_it(
    damage: str, release: Path, tmp_path: Path,
) -> None:
    model = release / "models" / "tiny-standin-v0.1.0.zip"
    assets = served(release, tmp_path)
    manifest = json.loads((assets / MANIFEST).read_text())
    fp32 = next(m for m in manifest["models"] if m["ir"] == "fp32")
    if damage == "tampered":
        path = assets / fp32["files"]["model.bin"]["asset"]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, another network
        path.write_bytes(bytes(data))
        cause = "does not match its manifest"
    elif damage == "other_openvino":
        fp32["openvino"] = "2019.3.0"
        (assets / MANIFEST).write_text(json.dumps(manifest))
        cause = "was converted with OpenVINO 2019.3.0"
    else:
        (assets / fp32["files"]["model.xml"]["asset"]).unlink()
        cause = "cannot read tiny-standin-v0.1.0-fp32-"
    with LocalFileServer(assets) as server:
        args = ["convert", "--model", str(model), "--precision", "f32", "--release-url", server.url("")]
        refused = engine(release, tmp_path / "cache", *args)
        assert refused.returncode == 3, refused.stderr[-3000:]
        last = refused.stderr.strip().splitlines()[-1]
        assert last.startswith("mhub-cpu: error: no pre-converted fp32 IR of tiny-standin-v0.1.0") and cause in last, last
        assert "pip install 'mhub-cpu[convert]'" in last and "Traceback" not in refused.stderr
        assert not list((tmp_path / "cache").glob("openvino/tiny-standin*")), "nothing cached from a refused release"
        converted = engine(release, tmp_path / "cache", *args, torch=True)
        assert converted.returncode == 0, converted.stderr
        assert "converting tiny-standin-v0.1.0 to OpenVINO IR (fp32)" in converted.stderr


def test_no_download_never_asks_the_server(release: Path, tmp_path: Path) -> None:
    model = release / "models" / "tiny-standin-v0.1.0.zip"
    with LocalFileServer(served(release, tmp_path)) as server:
        result = engine(release, tmp_path / "cache", "convert", "--model", str(model), "--release-url", server.url(""), "--no-download")
        assert server.requests == 0
    assert result.returncode == 3 and "pip install 'mhub-cpu[convert]'" in result.stderr


def test_the_packaged_release_serves_the_demo_model_without_torch(tmp_path: Path) -> None:
    result = engine(Path(), tmp_path / "cache", "convert", "--model", "demo", download=False)
    assert result.returncode == 0, result.stderr
    assert f"from the release at {packaged_release()}" in result.stderr


@pytest.mark.parametrize(("change", "named"), [
    (lambda m: m.update(extra=1), "unknown key(s) extra"),
    (lambda m: m.update(format="mhub-cpu-release/9"), "this engine reads mhub-cpu-release/1"),
    (lambda m: m["models"][0]["files"]["model.bin"].update(asset="../../etc/passwd"), "asset must be a file name without a path"),
    (lambda m: m["models"][0]["files"]["model.bin"].update(size=1 << 40), "size must be 1 to"),
    (lambda m: m["models"][0]["files"].update({"run.sh": m["models"][0]["files"]["model.bin"]}), "files may only name"),
    (lambda m: m["models"][0].update(checkpoint_sha256="0" * 63), "checkpoint_sha256 must be 64"),
    (lambda m: m["models"][0].update(ir="fp8"), "ir must be one of"),
])
def test_the_manifest_schema_is_closed(change: object, named: str) -> None:
    manifest = json.loads((packaged_release() / MANIFEST).read_text())
    change(manifest)  # type: ignore[operator]
    with pytest.raises(ModelError, match="release manifest") as refused:
        parse_manifest(json.dumps(manifest).encode(), "test")
    assert named in str(refused.value)
