"""The wheel as users install it: built from this tree, installed into a clean venv without PyTorch,
run from a folder outside the repository (``make test-wheel``).

The wheel carries its data (catalogue, coding tables, calibration CT, demo model with its
pre-converted IR, sample CT); ``mhub-cpu demo``, ``segment`` on DICOM and NIfTI, and ``bodypart``
with a stand-in model (converted beforehand, as ``bodypart-convert`` in an image does) must work.
The package list of pyproject.toml is checked against the source folders in ``make test``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import CT_DICOM, CT_NIFTI
from mhub_cpu_dev.standins.bodypart import random_state_dict, write_model_dir

REPO = Path(__file__).resolve().parents[2]


def test_every_subpackage_of_the_engine_is_in_the_wheel_list() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    source = {".".join(p.parent.relative_to(REPO / "base").parts) for p in (REPO / "base" / "mhub_cpu").rglob("__init__.py")}
    assert source <= listed, f"missing from [tool.setuptools] packages: {sorted(source - listed)}"


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv holding the wheel and its dependencies from the package index, and nothing else."""
    root = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", root / "dist", REPO, cwd=root)
    wheel = next((root / "dist").glob("mhub_cpu-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "mhub_cpu/_data/release/manifest.json" in names and "mhub_cpu/_data/demo/abdominal-organs-demo-v0.1.0.zip" in names
    assert "mhub_cpu/_data/configs/auto3dseg_models.json" in names and "mhub_cpu/_data/configs/calibration/abdomen_3mm.nii.gz" in names
    assert len([n for n in names if n.startswith("mhub_cpu/_data/sample/abdomen_3mm_dicom/")]) == 112
    assert not [n for n in names if n.startswith(("dev/", "tests/", "mhub_cpu_dev/"))]
    print(f"\n{wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB, {len(names)} files")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=root)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=root)
    missing = subprocess.run([venv / "bin" / "python", "-c", "import torch"], capture_output=True)
    assert missing.returncode != 0, "the runtime install must not hold torch"
    print_footprint(venv)
    return venv


def print_footprint(venv: Path) -> None:
    """The runtime install's size and its largest packages (a figure for README, not an assertion)."""
    site = next((venv / "lib").glob("python3.*/site-packages"))
    sizes = {entry.name: sum(f.stat().st_size for f in entry.rglob("*") if f.is_file()) if entry.is_dir() else entry.stat().st_size
             for entry in site.iterdir() if not entry.name.endswith(".dist-info")}
    total = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    top = ", ".join(f"{name} {size / 2**20:.0f}" for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:10])
    print(f"runtime venv: {total / 2**20:.0f} MiB; largest (MiB): {top}")


def outside_env(venv: Path, cache: Path) -> dict[str, str]:
    """The user's environment: no PYTHONPATH into the tree, the venv's bin first, a cache of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MHUB_CPU_"))}
    return {**env, "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}", "MHUB_CPU_CACHE": str(cache), "MHUB_CPU_NO_DOWNLOAD": "1"}


@pytest.mark.wheel
def test_demo_segment_and_bodypart_run_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = outside_env(installed, tmp_path / "cache")

    demo = run("mhub-cpu", "demo", cwd=away, env=env)
    assert "from the release at" in demo.stderr and "converting" not in demo.stderr
    report = json.loads((away / "mhub-cpu-demo" / "report.json").read_text())
    assert report["input"]["path"].endswith("_data/sample/abdomen_3mm_dicom") and "site-packages" in report["input"]["path"]
    assert sum(1 for s in report["result"]["segments"] if s["voxels"]) >= 10
    assert (away / "mhub-cpu-demo" / "segmentation.dcm").is_file()

    run("mhub-cpu", "segment", "--input", CT_DICOM, "--output", "dicom-out", "--model", "demo", cwd=away, env=env)
    assert (away / "dicom-out" / "segmentation.dcm").is_file()
    run("mhub-cpu", "segment", "--input", CT_NIFTI, "--output", "nifti-out", cwd=away, env=env)
    assert (away / "nifti-out" / "segmentation.nii.gz").is_file() and not (away / "nifti-out" / "segmentation.dcm").exists()

    # bodypart: the stand-in's IR converted beforehand with torch (here: the test's own environment),
    # into the cache the installed engine then uses, as an image's build does.
    model = write_model_dir(tmp_path / "bpr-model", random_state_dict(0))
    run(sys.executable, "-m", "mhub_cpu.cli", "bodypart-convert", "--model", model, cwd=REPO,
        env={**os.environ, "MHUB_CPU_CACHE": str(tmp_path / "cache")})
    run("mhub-cpu", "bodypart", "--input", CT_DICOM, "--output", "bpr-out", "--model", model, cwd=away, env=env)
    qa = json.loads((away / "bpr-out" / "qa.json").read_text())
    assert qa["status"] == "ok" and (away / "bpr-out" / "bpr_regions_sr.dcm").is_file()

    # a catalogue model that no release serves: converting it needs the convert extra, and the error says so
    other = tmp_path / "other.zip"
    from mhub_cpu_dev.standins.auto3dseg import write_tiny_model

    write_tiny_model(other)
    refused = subprocess.run(["mhub-cpu", "convert", "--model", str(other)], cwd=away, env=env, capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 3 and "pip install 'mhub-cpu[convert]'" in refused.stderr, refused.stderr
