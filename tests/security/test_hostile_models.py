"""Hostile model archives are refused from the sizes they declare, in a fraction of what they claim."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from childproc import run_measured
from conftest import CT_NIFTI
from mhub_cpu.core.archives import MAX_MEMBERS, check_archive
from mhub_cpu.core.errors import ModelError

#: The child's peak memory (VmHWM via ru_maxrss) a refusal may take: the engine's imports and no more.
PEAK_BOUND_MIB = 600

def segment_with(model: Path, out: Path) -> tuple[subprocess.CompletedProcess, float]:
    return run_measured([sys.executable, "-m", "mhub_cpu.cli", "segment", "--input", str(CT_NIFTI), "--output", str(out), "--model", str(model)])


def zip_bomb(path: Path, mib: int) -> Path:
    """A model zip whose checkpoint member is ``mib`` MiB of zeros (about 1000:1 compressed), written in chunks."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/labels.csv", "1,liver\n")
        with archive.open("model/model.pt", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(mib):
                member.write(chunk)
    return path


def test_a_zip_bomb_is_refused_from_its_declared_ratio(tmp_path: Path) -> None:
    model = zip_bomb(tmp_path / "bomb-v0.1.0.zip", 2048)
    assert model.stat().st_size < 8 << 20
    marker = tmp_path / "out"
    result, peak_mib = segment_with(model, marker)
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "model/model.pt declares 2.0 GiB from" in line and "the limit is 50): a zip bomb, not a model" in line, line
    assert "Traceback" not in result.stderr
    assert not marker.exists() or not any(marker.iterdir()), "a refusal leaves no result files"
    assert peak_mib < PEAK_BOUND_MIB, f"peak {peak_mib:.0f} MiB while refusing"


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(MAX_MEMBERS + 1):
            archive.writestr(f"model/{index}.txt", "x")
    with zipfile.ZipFile(path) as archive, pytest.raises(ModelError, match=f"has {MAX_MEMBERS + 1} members, more than the {MAX_MEMBERS}"):
        check_archive(archive, path)


def test_a_member_larger_than_the_memory_it_may_take_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/model.pt", bytes(3 << 20))  # stored: ratio 1, as real weights nearly are
    with zipfile.ZipFile(path) as archive:
        check_archive(archive, path, memory_bytes=4 << 20)
        with pytest.raises(ModelError, match=r"model/model.pt declares 3.0 MiB uncompressed, more than the 2.0 MiB of memory"):
            check_archive(archive, path, memory_bytes=2 << 20)


def test_the_demo_model_passes(demo_model: Path) -> None:
    with zipfile.ZipFile(demo_model) as archive:
        check_archive(archive, demo_model)
