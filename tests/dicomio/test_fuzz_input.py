"""Fuzz test: many header and file mutations of a real series, both commands, one of two outcomes.

Each run must end in exactly one of:
- success (exit 0) with outputs that highdicom reads back and dciodvfy passes with 0 errors;
- a clear one-line refusal (``mhub-cpu: error: …``, exit ≠ 0) and no result files (``bodypart``
  leaves only its ``qa.json`` error record).
A traceback, an internal error or a half-written output fails the test. Mutations of Type 2/3
attributes (which scanners leave out) must succeed. The table of outcomes is printed.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import subprocess
import sys
import traceback
from collections import Counter
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from input_mutations import Mutation, mutations

from conftest import CT_DICOM
from mhub_cpu.cli import main
from mhub_cpu_dev.standins.auto3dseg import write_tiny_model
from mhub_cpu_dev.standins.bodypart import random_state_dict, write_model_dir

#: The crop of the sample series every mutation starts from: 12 slices through liver and kidneys
#: (input handling is the point; the tiny stand-in model segments it in one 32³ window).
SLICES = slice(48, 60)
SEGMENT_OUTPUTS = {"segmentation.dcm", "segmentation.nii.gz", "preview.png", "report.json"}
BODYPART_OUTPUTS = {"bpreg.json", "qa.json", "bpr_landmarks_sr.dcm", "bpr_regions_sr.dcm"}


def dciodvfy_errors(path: Path) -> list[str]:
    tool = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")
    assert Path(tool).exists(), "dciodvfy (dicom3tools, a test dependency) is not installed"
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, errors="replace")
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def run_command(argv: list[str]) -> tuple[int | str, str]:
    """Run the CLI in this process; a Python exception escaping it is returned as ``traceback``."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code: int | str = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
        except BaseException:  # noqa: BLE001 - a traceback is exactly what the test looks for
            code = "traceback"
            stderr.write(traceback.format_exc())
    return code, stderr.getvalue()


def outcome(command: str, code: int | str, stderr: str, out: Path) -> tuple[str, str]:
    """(``ok`` | ``refused`` | ``FAILED``, detail) for one run."""
    if code == "traceback":
        return "FAILED", "traceback: " + stderr.strip().splitlines()[-1]
    present = {p.name for p in out.iterdir()} if out.exists() else set()
    if code == 0:
        wanted = SEGMENT_OUTPUTS if command == "segment" else BODYPART_OUTPUTS
        if not wanted <= present or present - wanted:
            return "FAILED", f"exit 0 but outputs {sorted(present)}"
        problems = []
        try:
            if command == "segment":
                hd.seg.segread(out / "segmentation.dcm")
                problems = dciodvfy_errors(out / "segmentation.dcm")
            else:
                if json.loads((out / "qa.json").read_text())["status"] != "ok":
                    return "FAILED", "exit 0 but qa.json status is not ok"
                for name in ("bpr_landmarks_sr.dcm", "bpr_regions_sr.dcm"):
                    hd.sr.srread(out / name)
                    problems += dciodvfy_errors(out / name)
        except Exception as exc:  # noqa: BLE001 - any failure to read back is a finding
            return "FAILED", f"exit 0 but highdicom cannot read the output back: {type(exc).__name__}: {exc}"
        return ("FAILED", f"dciodvfy: {problems[:3]}") if problems else ("ok", "")
    errors = [line for line in stderr.splitlines() if not line.startswith("[mhub-cpu]")]
    if len(errors) != 1 or not errors[0].startswith("mhub-cpu: error: ") or "internal error" in errors[0]:
        return "FAILED", f"exit {code} with {errors[-3:]}"
    allowed = {"qa.json"} if command == "bodypart" else set()
    if present - allowed:
        return "FAILED", f"refused but left {sorted(present)}"
    if command == "bodypart" and json.loads((out / "qa.json").read_text())["status"] != "error":
        return "FAILED", "refused but qa.json does not record the error"
    return "refused", errors[0].removeprefix("mhub-cpu: error: ")


@pytest.fixture(scope="module")
def base_series() -> list[pydicom.Dataset]:
    files = sorted(CT_DICOM.glob("*.dcm"))[SLICES]
    return [pydicom.dcmread(path) for path in files]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-standin-v0.1.0.zip")


@pytest.fixture(scope="module")
def bodypart_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("bpr") / "model", random_state_dict(seed=3))


#: ``make test`` runs every SHARE-th mutation (a deterministic sample of every kind, since the list
#: is grouped by module); ``make test-slow`` runs the others, so CI runs each one.
SHARE = 4


@pytest.mark.parametrize("part", ["sample", pytest.param("rest", marks=pytest.mark.slow)])
def test_mutated_series_are_processed_or_refused_cleanly(
    part: str, base_series: list[pydicom.Dataset], bodypart_model: Path, tiny_model: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    table: list[tuple[str, str, str, str]] = []
    failures: list[str] = []
    all_mutations: list[Mutation] = [m for i, m in enumerate(mutations()) if (i % SHARE == 0) == (part == "sample")]
    for index, mutation in enumerate(all_mutations):
        source = tmp_path / f"m{index:03d}" / "input"
        mutation.apply(copy.deepcopy(base_series), source)
        for command, extra in (
            ("segment", ["--model", str(tiny_model)]),
            ("bodypart", ["--model", str(bodypart_model)]),
        ):
            out = tmp_path / f"m{index:03d}" / command
            code, stderr = run_command([command, "--input", str(source), "--output", str(out), *extra])
            result, detail = outcome(command, code, stderr, out)
            if result == "refused" and mutation.expect == "ok":
                result, detail = "FAILED", f"must be accepted, refused: {detail}"
            table.append((mutation.name, command, result, detail))
            if result == "FAILED":
                failures.append(f"{mutation.name} / {command}: {detail}")
        shutil.rmtree(tmp_path / f"m{index:03d}")
    counts = Counter((command, result) for _, command, result, _ in table)
    with capsys.disabled():  # the outcome of every run belongs in the test log, pass or fail
        print(f"\n{part}: {len(all_mutations)} of {len(mutations())} mutations, {len(table)} runs: " + ", ".join(f"{c} {r}: {n}" for (c, r), n in sorted(counts.items())))
        for name, command, result, detail in table:
            print(f"  {result:8} {command:8} {name}" + (f" -- {detail[:160]}" if detail else ""))
    assert not failures, "\n".join(failures)
    assert counts[("segment", "ok")] > len(all_mutations) // 2 and counts[("bodypart", "ok")] > len(all_mutations) // 2
