"""`mhub-cpu batch` end to end on the synthetic collection, on Dask LocalClusters of 2 workers:
outputs per series as the single-series command writes them, error records, resume, --force, a
worker killed mid-series, Ctrl-C, and bodypart on a cluster started apart (--scheduler)."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest

import childproc
from mhub_cpu.batch.collection import find_series
from mhub_cpu.core.files import STAGING_PREFIX
from mhub_cpu_dev.collection import build_collection
from mhub_cpu_dev.standins.bodypart import random_state_dict, write_model_dir

pytestmark = pytest.mark.slow

#: Quick demo-model settings (8 windows of 96³ on the sample CT), the same for batch and single runs.
QUICK = ["--model", "demo", "--windows", "sparse", "--overlap", "0.25"]
SEGMENT_FILES = {"segmentation.dcm", "segmentation.nii.gz", "preview.png", "report.json"}


def mhub_cpu(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mhub_cpu.cli", *args], capture_output=True, text=True, timeout=timeout)


def start(*args: str) -> subprocess.Popen:
    return childproc.popen([sys.executable, "-m", "mhub_cpu.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows_of(out: Path) -> list[dict]:
    return json.loads((out / "batch.json").read_text())["series"]


def staging_folders(out: Path) -> list[Path]:
    return [p for p in out.rglob(STAGING_PREFIX + "*")]


def first_worker_pid(out: Path, timeout: float = 300) -> int:
    """The pid of the first worker that starts a series (its staging folder is named after it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for folder in out.glob(f"*/{STAGING_PREFIX}*"):
            return int(re.search(r"-pid(\d+)-", folder.name).group(1))
        time.sleep(0.05)
    raise AssertionError("no series started")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("collection")
    return root, build_collection(root)


@pytest.fixture(scope="module")
def first_run(collection, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess, list[dict]]:
    root, _ = collection
    out = tmp_path_factory.mktemp("batch")
    result = mhub_cpu("batch", "segment", "--input", str(root), "--output", str(out), "--workers", "2", *QUICK)
    return out, result, rows_of(out)


def row_for(rows: list[dict], entry, root: Path) -> dict:
    """The row of a series of the synthetic collection (by its UID, generated ones as the listing gives them)."""
    uid = entry.series_uid or next(e.series_uid for e in find_series([root]) if e.input_dir == entry.folder)
    return next(r for r in rows if r["series_uid"] == uid)


def test_every_series_has_its_row_and_outputs(collection, first_run) -> None:
    root, series = collection
    out, result, rows = first_run
    assert result.returncode == 4, result.stderr  # two series fail: the batch says so, after running all
    assert "mhub-cpu: error: 2 of 7 series failed" in result.stderr and "Traceback" not in result.stderr
    assert len(rows) == len(series)
    for entry in series.values():
        row = row_for(rows, entry, root)
        assert row["status"] == entry.expected, (entry.name, row)
        assert entry.reason in row["reason"], (entry.name, row["reason"])
        if entry.expected == "done":
            folder = Path(row["output_dir"])
            assert {p.name for p in folder.iterdir()} == SEGMENT_FILES
            report = json.loads((folder / "report.json").read_text())
            assert folder == out / report["input"]["study_instance_uid"] / report["input"]["series_instance_uid"]
            assert report["input"]["path"] == str(entry.folder) and report["input"]["instances"] == len(list(entry.folder.iterdir()))
            if entry.series_uid is not None:
                assert (row["study_uid"], row["series_uid"]) == (entry.study_uid, entry.series_uid)
            assert row["structures_found"] > 0 and row["seconds_inference"] > 0 and row["peak_rss_mb"] > 0 and row["worker"]
        elif entry.expected == "not run":
            assert row["output_dir"] is None
    scanner = json.loads((Path(row_for(rows, series["scanner"], root)["output_dir"]) / "report.json").read_text())
    assert scanner["input"]["generated_uids"] == ["SeriesInstanceUID", "StudyInstanceUID"]
    assert not staging_folders(out)
    assert {p.name for p in (out / "logs").iterdir()} == {f"{r['series_uid']}.log" for r in rows if r["status"] in ("done", "failed")}


def test_error_records_say_the_cause(collection, first_run) -> None:
    root, series = collection
    _, _, rows = first_run
    for name, message in (("one-slice", "has 1 image; a volume needs at least 2"), ("truncated", "truncated DICOM file")):
        row = row_for(rows, series[name], root)
        folder = Path(row["output_dir"])
        assert [p.name for p in folder.iterdir()] == ["error.json"]
        record = json.loads((folder / "error.json").read_text())
        assert record["status"] == "error" and record["error"]["type"] == "InputError" and record["error"]["exit_code"] == 2
        assert message in record["error"]["message"] and message in row["reason"]
        assert record["input"]["series_instance_uid"] == series[name].series_uid and record["batch"]["job_key"]


def test_summary_files_and_statistics(collection, first_run) -> None:
    out, result, rows = first_run
    summary = json.loads((out / "batch.json").read_text())
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 2, "not run": 2, "interrupted": 0}
    assert summary["job"]["model"] == "abdominal-organs-demo-v0.1.0" and summary["job"]["windows"] == "sparse"
    assert "2 worker(s)" in summary["cluster"] and summary["wall_s"] > 0
    with open(out / "batch.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["series_uid"] for r in table] == [r["series_uid"] for r in rows]
    assert result.stdout.split() == [str(out / "batch.json"), str(out / "batch.csv"), str(out / "statistics.csv")]
    assert "batch 5/5" in result.stderr and "ETA" in result.stderr  # one line per finished series (no terminal)


def test_batch_output_equals_the_single_series_command(collection, first_run, tmp_path: Path) -> None:
    root, series = collection
    out, _, rows = first_run
    single = tmp_path / "single"
    threads = json.loads((out / "batch.json").read_text())["job"]["threads"]  # OpenVINO's sums depend on its threads
    result = mhub_cpu("segment", "--input", str(series["scanner"].folder), "--output", str(single), "--threads", str(threads), *QUICK)
    assert result.returncode == 0, result.stderr
    batch = Path(row_for(rows, series["scanner"], root)["output_dir"])
    ours, theirs = (json.loads((folder / "report.json").read_text()) for folder in (batch, single))
    for key in ("series_instance_uid", "study_instance_uid", "generated_uids", "instances"):
        assert ours["input"][key] == theirs["input"][key], key
    assert np.array_equal(np.asarray(nib.load(batch / "segmentation.nii.gz").dataobj), np.asarray(nib.load(single / "segmentation.nii.gz").dataobj))
    seg_batch, seg_single = (hd.seg.segread(folder / "segmentation.dcm") for folder in (batch, single))
    assert seg_batch.number_of_segments == seg_single.number_of_segments
    assert np.array_equal(seg_batch.pixel_array, seg_single.pixel_array)


def test_a_rerun_skips_complete_series_and_retries_failed_ones(collection, first_run) -> None:
    root, series = collection
    out, _, first = first_run
    done = {r["series_uid"]: (Path(r["output_dir"]) / "report.json").stat().st_mtime_ns for r in first if r["status"] == "done"}
    failed = {r["series_uid"]: (Path(r["output_dir"]) / "error.json").stat().st_mtime_ns for r in first if r["status"] == "failed"}
    result = mhub_cpu("batch", "segment", "--input", str(root), "--output", str(out), "--workers", "2", *QUICK)
    assert result.returncode == 4, result.stderr
    rows = rows_of(out)
    assert sorted(r["status"] for r in rows) == ["failed", "failed", "not run", "not run", "skipped", "skipped", "skipped"]
    for row in rows:
        if row["status"] == "skipped":
            assert (Path(row["output_dir"]) / "report.json").stat().st_mtime_ns == done[row["series_uid"]]
            assert row["structures_found"] > 0 and row["seconds_total"] is None
        if row["status"] == "failed":
            assert (Path(row["output_dir"]) / "error.json").stat().st_mtime_ns != failed[row["series_uid"]]  # run again
            assert row["seconds_total"] is not None

    # --force runs a complete series again; other settings make it incomplete
    abdomen = series["abdomen"].folder
    for extra in (["--force"], ["--overlap", "0.3"]):
        result = mhub_cpu("batch", "segment", "--input", str(abdomen), "--output", str(out), *QUICK, *extra)
        assert result.returncode == 0, result.stderr
        (row,) = rows_of(out)
        assert row["status"] == "done" and (Path(row["output_dir"]) / "report.json").stat().st_mtime_ns != done[row["series_uid"]]
    assert not staging_folders(out)


@pytest.fixture(scope="module")
def two_series(collection, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two sample copies (study 1) alone: one for each of two workers."""
    root, _ = collection
    return root / "site-a"


def test_a_worker_killed_mid_series_loses_nothing(two_series: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = start("batch", "segment", "--input", str(two_series), "--output", str(out), "--workers", "2", *QUICK)
    killed = first_worker_pid(out)
    os.kill(killed, signal.SIGKILL)
    stdout, stderr = batch.communicate(timeout=600)
    assert batch.returncode == 0, stderr
    rows = rows_of(out)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert all(not r["worker"].endswith(f":{killed}") for r in rows)  # the killed worker's series ran elsewhere
    for row in rows:
        assert {p.name for p in Path(row["output_dir"]).iterdir()} == SEGMENT_FILES
    assert not staging_folders(out)


def test_ctrl_c_stops_cleanly(two_series: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = start("batch", "segment", "--input", str(two_series), "--output", str(out), "--workers", "2", *QUICK)
    worker = first_worker_pid(out)
    batch.send_signal(signal.SIGINT)
    _, stderr = batch.communicate(timeout=120)
    assert batch.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.rstrip().endswith("mhub-cpu: interrupted; partial results removed")
    rows = rows_of(out)
    assert [r["status"] for r in rows] == ["interrupted", "interrupted"] and all(r["output_dir"] is None for r in rows)
    assert json.loads((out / "batch.json").read_text())["interrupted"] is True
    assert not staging_folders(out)
    assert not [p for p in out.iterdir() if p.is_dir() and any(p.iterdir()) and p.name != "logs"]  # no series folder
    assert not alive(worker)


#: A LocalCluster in a process of its own (Dask's threads and event loop stay out of the test process):
#: prints the scheduler's address, runs until its stdin closes.
CLUSTER_APART = """
import sys
from distributed import LocalCluster
resources = {"memory": float(sys.argv[1])} if len(sys.argv) > 1 else None
with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", resources=resources) as cluster:
    print(cluster.scheduler_address, flush=True)
    sys.stdin.read()
"""


@contextmanager
def cluster_apart(*memory: str) -> Iterator[str]:
    process = subprocess.Popen([sys.executable, "-c", CLUSTER_APART, *memory], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        address = process.stdout.readline().strip()
        assert address.startswith("tcp://"), address
        yield address
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=120)


def test_bodypart_on_a_cluster_started_apart(collection, tmp_path: Path) -> None:
    root, series = collection
    model = write_model_dir(tmp_path / "model", random_state_dict(0))
    out = tmp_path / "out"
    inputs = ["--input", str(series["abdomen"].folder), "--input", str(series["mr"].folder)]
    with cluster_apart() as plain:
        result = mhub_cpu("batch", "bodypart", *inputs, "--output", str(out), "--model", str(model), "--scheduler", plain)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1].startswith("mhub-cpu: error: no worker of the Dask cluster at")
    with cluster_apart("3000") as cluster:
        result = mhub_cpu("batch", "bodypart", *inputs, "--output", str(out), "--model", str(model), "--scheduler", cluster)
    assert result.returncode == 0, result.stderr
    rows = rows_of(out)
    assert [r["status"] for r in rows] == ["done", "not run"]
    folder = Path(rows[0]["output_dir"])
    assert {"qa.json", "bpreg.json", "bpr_regions_sr.dcm"} <= {p.name for p in folder.iterdir()}
    qa = json.loads((folder / "qa.json").read_text())
    assert qa["status"] == "ok" and qa["batch"]["job_key"] and rows[0]["verdict"] == qa["verdict"]
    assert rows[0]["body_part"] == qa["body_part_examined"]["bpreg_tag"] and rows[0]["header_body_part"] == "ABDOMEN"
    assert {Path(p).name for p in result.stdout.split()} == {"batch.json", "batch.csv", "qa_report.csv", "qa_report.html"}
