"""Nothing half-written: interrupted, killed and failing runs; output permissions; --output a file."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import childproc
from conftest import CT_DICOM, CT_NIFTI
from mhub_cpu.core.files import STAGING_PREFIX
from mhub_cpu_dev.standins.bodypart import random_state_dict, write_model_dir

SEGMENT_FILES = {"segmentation.dcm", "segmentation.nii.gz", "preview.png", "report.json"}


def cli(*args: str, umask: int | None = None) -> subprocess.CompletedProcess:
    def set_umask() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run(
        [sys.executable, "-m", "mhub_cpu.cli", *args], capture_output=True, text=True, preexec_fn=set_umask,
    )


@pytest.fixture(scope="module")
def bpr_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("bpr") / "model", random_state_dict(seed=1))


def start_and_stop_in_inference(output: Path, demo_model: Path, how: signal.Signals) -> subprocess.Popen:
    """Start a segment run, wait until it is inside inference (staging exists), send ``how``."""
    process = childproc.popen(
        [sys.executable, "-m", "mhub_cpu.cli", "segment", "--input", str(CT_DICOM), "--output", str(output),
         "--model", str(demo_model), "--threads", "1"],
        stderr=subprocess.PIPE, text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "inference ..." in line:
            break
    else:
        pytest.fail(f"the run ended before inference (exit {process.wait()})")
    assert list(output.glob(STAGING_PREFIX + "*")), "a staging folder exists during the run"
    process.send_signal(how)
    process.communicate(timeout=120)
    return process


@pytest.mark.parametrize("how,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_a_run_removes_the_staging_folder(tmp_path: Path, demo_model: Path, how: signal.Signals, code: int) -> None:
    process = start_and_stop_in_inference(tmp_path / "out", demo_model, how)
    assert process.returncode == code
    assert list((tmp_path / "out").iterdir()) == [], "no staging folder, no result"


def test_a_killed_runs_litter_is_removed_by_the_next_run(tmp_path: Path, demo_model: Path) -> None:
    out = tmp_path / "out"
    process = start_and_stop_in_inference(out, demo_model, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    litter = list(out.glob(STAGING_PREFIX + "*"))
    assert len(litter) == 1 and not (out / "report.json").exists()
    foreign = out / f"{STAGING_PREFIX}another-host-pid1-abcd"  # not ours to judge: kept
    foreign.mkdir()
    live = out / f"{STAGING_PREFIX}{socket.gethostname()}-pid{os.getpid()}-abcd"  # a live process: kept
    live.mkdir()
    result = cli("segment", "--input", str(CT_DICOM), "--output", str(out), "--model", str(demo_model))
    assert result.returncode == 0, result.stderr
    assert "left by an interrupted earlier run" in result.stderr
    assert not litter[0].exists() and foreign.exists() and live.exists()
    assert SEGMENT_FILES <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_output_permissions_follow_the_umask(tmp_path: Path, demo_model: Path, bpr_model: Path, umask: int) -> None:
    segment = cli("segment", "--input", str(CT_DICOM), "--output", str(tmp_path / "seg"), "--model", str(demo_model), umask=umask)
    bodypart = cli("bodypart", "--input", str(CT_DICOM), "--output", str(tmp_path / "bpr"), "--model", str(bpr_model), umask=umask)
    assert segment.returncode == 0 and bodypart.returncode == 0, segment.stderr + bodypart.stderr
    files = list((tmp_path / "seg").iterdir()) + list((tmp_path / "bpr").iterdir())
    assert len(files) == 4 + 4
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_output_naming_a_file_is_a_clear_error(tmp_path: Path, demo_model: Path, bpr_model: Path) -> None:
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    for command, model in (("segment", demo_model), ("bodypart", bpr_model)):
        result = cli(command, "--input", str(CT_NIFTI), "--output", str(target), "--model", str(model))
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1] == f"mhub-cpu: error: --output {target} is an existing file, not a folder"
        assert "Traceback" not in result.stderr
    assert target.read_text() == "keep me\n"


def test_bodypart_failing_after_scoring_leaves_only_the_error_record(tmp_path: Path, bpr_model: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "bpreg.json").write_text("{}")  # an earlier run's result must not survive beside the error
    result = cli("bodypart", "--input", str(CT_NIFTI), "--output", str(out), "--model", str(bpr_model),
                 "--crop-from", "L5", "--crop-to", "no_such_landmark")
    assert result.returncode == 2 and "unknown landmark 'no_such_landmark'" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["qa.json"]
    qa = json.loads((out / "qa.json").read_text())
    assert qa["status"] == "error" and qa["error"]["exit_code"] == 2


def test_segment_failure_removes_an_earlier_result(tmp_path: Path, demo_model: Path) -> None:
    out = tmp_path / "out"
    assert cli("segment", "--input", str(CT_NIFTI), "--output", str(out), "--model", str(demo_model)).returncode == 0
    result = cli("segment", "--input", str(tmp_path / "missing.nii.gz"), "--output", str(out), "--model", str(demo_model))
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert list(out.iterdir()) == []
