"""The batch's parts without a cluster: collection listing and reasons, job keys, worker plans,
summary rows, the per-series task (staging, publishing, error records) and the compiled-network reuse."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import CT_DICOM, SCANNER_DICOM, copy_series
from mhub_cpu.batch.cluster import plan_workers
from mhub_cpu.batch.collection import find_series, folder_name
from mhub_cpu.batch.jobs import SeriesInput, segment_key_base, series_key
from mhub_cpu.batch.outcome import SeriesOutcome, Status
from mhub_cpu.batch.summary import FIELDS, stage_split, summary_row, write_summary
from mhub_cpu.batch.tasks import SeriesTask, TaskResult, record_failure, reset_peak_rss, run_series
from mhub_cpu.cli import build_parser
from mhub_cpu.core.errors import InputError
from mhub_cpu.core.files import STAGING_PREFIX
from mhub_cpu.core.progress import peak_rss_mb
from mhub_cpu.dicomio.discovery import scan_directory
from mhub_cpu.dicomio.uids import resolve_uids
from mhub_cpu.runtime.network import Network, compile_for_cpu, keep_compiled
from mhub_cpu.runtime.precision import Precision
from mhub_cpu.segment.pipeline import InferenceSettings
from mhub_cpu_dev.collection import build_collection


@pytest.fixture(autouse=True)
def no_kept_networks():
    """run_series keeps compiled networks in its process, as a worker does; not in the test process."""
    yield
    keep_compiled(0)


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("collection")
    return root, build_collection(root)


def by_folder(entries: list) -> dict[Path, object]:
    return {entry.input_dir: entry for entry in entries}


def test_every_series_is_listed_with_the_reason_it_is_not_run(collection) -> None:
    root, series = collection
    entries = by_folder(find_series([root]))
    assert len(entries) == len(series)
    for expected in series.values():
        entry = entries[expected.folder]
        if expected.expected == "not run":
            assert expected.reason in entry.reason, (expected.name, entry.reason)
        else:  # one-slice and truncated are CT series: they are run, and fail there with an error record
            assert entry.reason == "", (expected.name, entry.reason)
        if expected.series_uid is not None:
            assert (entry.study_uid, entry.series_uid) == (expected.study_uid, expected.series_uid)
    assert entries[series["chest-header"].folder].header_body_part == "CHEST"
    assert entries[series["abdomen"].folder].header_body_part == "ABDOMEN"
    assert len(entries[series["abdomen"].folder].files) == 112


def test_blank_uids_get_the_uids_the_single_series_command_generates(collection) -> None:
    root, series = collection
    entry = by_folder(find_series([root]))[series["scanner"].folder]
    (alone,), _ = scan_directory(SCANNER_DICOM)  # the path `segment --input` takes
    resolve_uids(alone)
    assert (entry.study_uid, entry.series_uid) == (alone.study_instance_uid, alone.series_instance_uid)
    assert entry.generated_uids == ("StudyInstanceUID", "SeriesInstanceUID")
    assert entry.output_dir(Path("/out")) == Path("/out") / alone.study_instance_uid / alone.series_instance_uid


def test_duplicates_across_roots_localizers_and_the_output_folder(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    copy_series(CT_DICOM, first / "ct")
    copy_series(CT_DICOM, second / "same-ct")  # the same series (same UIDs) under a second root
    files = sorted(CT_DICOM.iterdir())[:3]
    scouts = second / "scouts"
    scouts.mkdir()
    for index, path in enumerate(files):
        dataset = pydicom.dcmread(path)
        dataset.SeriesInstanceUID = "1.2.3.4.5.6"
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = f"1.2.3.4.5.6.{index}"
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        dataset.save_as(scouts / path.name)
    out = first / "results"  # the output folder inside a root holds DICOM (a SEG, say): never scanned
    copy_series(CT_DICOM, out / "copy", SeriesInstanceUID="1.2.3.4.5.7")
    entries = find_series([first, second], exclude=out)
    assert [(e.input_dir.name, e.reason.split(":")[0].split(" (")[0]) for e in entries] == [
        ("ct", ""), ("same-ct", "duplicate"), ("scouts", "only localizer"),
    ]
    assert str(first / "ct") in entries[1].reason


def test_unreadable_files_are_rows_of_their_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_series(CT_DICOM, tmp_path / "ct")
    broken = sorted((tmp_path / "ct").iterdir())[-1]
    real = pydicom.dcmread

    def dcmread(path, *args, **kwargs):
        if Path(path) == broken:
            raise OSError("Input/output error")
        return real(path, *args, **kwargs)

    monkeypatch.setattr("mhub_cpu.dicomio.discovery.pydicom.dcmread", dcmread)
    entries = find_series([tmp_path])
    assert [len(e.files) for e in entries] == [111, 1]
    assert entries[1].reason == f"unreadable DICOM file {broken}: OSError: Input/output error"
    assert entries[1].series_uid == ""


def test_folder_names_of_uids_from_the_wild() -> None:
    assert folder_name("1.2.840.10008.5") == "1.2.840.10008.5"
    assert folder_name(" 1.2/../3 ") == "1.2_.._3"
    assert folder_name("..") == "_"


def test_job_key_follows_files_and_settings(tmp_path: Path) -> None:
    files = copy_series(CT_DICOM, tmp_path / "ct")[:3]
    base = segment_key_base("sha", "ir-name", InferenceSettings(), "BINARY")
    key = series_key(base, files)
    assert series_key(base, list(reversed(files))) == key  # any order
    assert segment_key_base("sha", "ir-name", InferenceSettings(threads=3), "BINARY") == base  # threads change no result
    for other in (
        segment_key_base("other", "ir-name", InferenceSettings(), "BINARY"),
        segment_key_base("sha", "ir-int8", InferenceSettings(), "BINARY"),
        segment_key_base("sha", "ir-name", InferenceSettings(overlap=0.5), "BINARY"),
        segment_key_base("sha", "ir-name", InferenceSettings(precision=Precision.BF16), "BINARY"),
        segment_key_base("sha", "ir-name", InferenceSettings(), "LABELMAP"),
    ):
        assert other != base
    assert series_key(base, files[:2]) != key
    os.utime(files[0], ns=(files[0].stat().st_atime_ns, files[0].stat().st_mtime_ns + 10**9))
    assert series_key(base, files) != key


@pytest.mark.parametrize(
    ("cores", "available", "budget", "workers", "threads", "expected"),
    [
        (2, 20000, 1000, None, None, (2, 1, 10000)),
        (8, 10000, 3000, None, None, (3, 2, 3333)),
        (16, 64000, 1000, None, None, (16, 1, 4000)),
        (16, 64000, 1000, 2, None, (2, 4, 32000)),  # at most 4 OpenVINO threads
        (8, 64000, 1000, None, 4, (2, 4, 32000)),
        (8, 2500, 3000, None, None, None),
    ],
)
def test_worker_plans(cores, available, budget, workers, threads, expected) -> None:
    if expected is None:
        with pytest.raises(InputError, match="one series needs 3000 MiB .* only 2500 MiB"):
            plan_workers(cores, available, budget, workers, threads)
        return
    plan = plan_workers(cores, available, budget, workers, threads)
    assert (plan.workers, plan.threads, int(plan.memory_mb)) == expected


def test_impossible_worker_plans_are_refused_in_one_line() -> None:
    with pytest.raises(InputError, match=r"--workers 4 at 3000 MiB each needs 12000 MiB, but 8000 MiB is available; 2 worker\(s\) fit"):
        plan_workers(8, 8000, 3000, 4)
    with pytest.raises(InputError, match="--threads-per-worker 3 with 2 worker.* needs 6 cores; this machine has 4"):
        plan_workers(4, 8000, 1000, 2, 3)
    with pytest.raises(InputError, match="--workers must be at least 1"):
        plan_workers(4, 8000, 1000, 0)


def outcome(status: Status, reason: str = "", **kw) -> SeriesOutcome:
    fields = dict(
        input_root=Path("/in"), study_uid="1.2", series_uid="1.2.3", status=status, reason=reason, output_dir=Path("/out/1.2/1.2.3"),
        header_body_part="CHEST", modality="CT", series_description="thorax", files=100,
    )
    return SeriesOutcome(**{**fields, **kw})


def test_summary_rows_and_files(tmp_path: Path) -> None:
    stages = {"load network": 0.5, "read input": 1.0, "preprocess": 0.25, "inference": 5.0, "restore grid": 0.25, "write outputs": 1.5,
              "write DICOM-SEG": 0.5}
    assert stage_split(stages, 10.0) == {"seconds_read": 1.0, "seconds_inference": 5.0, "seconds_write": 2.0, "seconds_other": 2.0}
    assert stage_split({"inference (90 slices, f32)": 3.0}, 4.0)["seconds_inference"] == 3.0
    done = TaskResult(Status.DONE, "", 10.0, stages, 612.34, "host:42", {"structures_found": 2, "structures": "Liver; Spleen"})
    rows = [
        summary_row(outcome(Status.DONE), done),
        summary_row(outcome(Status.SKIPPED), results={"structures_found": 1, "structures": "Liver"}),
        summary_row(outcome(Status.FAILED, "series 1.2.3 has 1 image"), TaskResult(Status.FAILED, "series 1.2.3 has 1 image", 0.5, worker="host:43")),
        summary_row(outcome(Status.NOT_RUN, "unreadable DICOM file /in/x: OSError", study_uid="", series_uid="", output_dir=None, files=1)),
    ]
    assert rows[0]["peak_rss_mb"] == 612.3 and rows[0]["worker"] == "host:42" and rows[0]["seconds_other"] == 2.0
    assert rows[1]["seconds_total"] is None and rows[1]["structures"] == "Liver"
    json_path, csv_path = write_summary(tmp_path, "segment", rows, {"tool": "mhub-cpu batch"})
    summary = json.loads(json_path.read_text())
    assert summary["counts"] == {"done": 1, "skipped": 1, "failed": 1, "not run": 1, "interrupted": 0}
    assert summary["series"] == rows
    with open(csv_path, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == [*FIELDS, "structures_found", "structures"]
    assert [row["status"] for row in table] == ["done", "skipped", "failed", "not run"]
    assert table[2]["reason"] == "series 1.2.3 has 1 image" and table[3]["output_dir"] == ""


def test_batch_command_line() -> None:
    args = build_parser().parse_args(
        ["batch", "segment", "--input", "a", "--input", "b", "--output", "o", "--workers", "2", "--windows", "sparse", "--force"]
    )
    assert args.input == [Path("a"), Path("b")] and args.workers == 2 and args.strategy == "sparse" and args.force
    args = build_parser().parse_args(["batch", "bodypart", "--input", "a", "--output", "o", "--fast", "--scheduler", "tcp://h:8786"])
    assert args.fast and args.scheduler == "tcp://h:8786" and args.retries == 2


class FakeJob:
    """A job that writes one file, or raises what it is given (picklable, like the real ones)."""

    kind = "segment"
    record = "report.json"
    error_file = "error.json"

    def __init__(self, raises: BaseException | None = None) -> None:
        self.raises = raises

    def run(self, series: SeriesInput, output_dir: Path) -> None:
        (output_dir / "result.txt").write_text("complete")
        if self.raises is not None:
            (output_dir / "result.txt").unlink()
            raise self.raises
        (output_dir / "report.json").write_text(json.dumps({"stages_s": {"inference": 1.0}, "outputs": {"r": "result.txt"}}))

    def failure_record(self, output_dir: Path, exc: BaseException, series: SeriesInput) -> dict:
        return {"status": "error", "error": {"message": str(exc)}}

    @staticmethod
    def key_results(record: dict) -> dict:
        return {"structures_found": 1}

    @staticmethod
    def stage_seconds(record: dict) -> dict:
        return record.get("stages_s", {})


def task_in(tmp_path: Path) -> SeriesTask:
    series = SeriesInput("1.2", "1.2.3", (tmp_path / "x.dcm",), tmp_path)
    return SeriesTask(series, tmp_path / "out" / "1.2" / "1.2.3", "key-1", tmp_path / "out" / "logs" / "1.2.3.log")


def test_a_series_is_published_whole_and_replaces_an_earlier_result(tmp_path: Path) -> None:
    task = task_in(tmp_path)
    task.output_dir.mkdir(parents=True)
    (task.output_dir / "stale.txt").write_text("from an earlier run")
    result = run_series(FakeJob(), task)
    assert result.status is Status.DONE and result.results == {"structures_found": 1} and result.stages_s == {"inference": 1.0}
    assert sorted(p.name for p in task.output_dir.iterdir()) == ["report.json", "result.txt"]
    assert json.loads((task.output_dir / "report.json").read_text())["batch"]["job_key"] == "key-1"
    assert not list(task.output_dir.parent.glob(STAGING_PREFIX + "*"))
    assert task.log_path.is_file()


def test_a_failed_series_publishes_its_error_record(tmp_path: Path) -> None:
    task = task_in(tmp_path)
    result = run_series(FakeJob(InputError("series 1.2.3 has 1 image; a volume needs at least 2")), task)
    assert result.status is Status.FAILED and result.reason == "series 1.2.3 has 1 image; a volume needs at least 2"
    assert sorted(p.name for p in task.output_dir.iterdir()) == ["error.json"]
    record = json.loads((task.output_dir / "error.json").read_text())
    assert record["error"]["message"].startswith("series 1.2.3 has 1 image") and record["batch"]["job_key"] == "key-1"
    bug = run_series(FakeJob(ZeroDivisionError("division by zero")), task)
    assert bug.reason == "internal error: ZeroDivisionError: division by zero"
    lost = record_failure(FakeJob(), task, "the worker running this series died 3 times")
    assert lost.status is Status.FAILED
    assert json.loads((task.output_dir / "error.json").read_text())["error"]["message"] == "the worker running this series died 3 times"


def test_an_interrupted_series_leaves_nothing(tmp_path: Path) -> None:
    task = task_in(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_series(FakeJob(KeyboardInterrupt()), task)
    assert not task.output_dir.exists()
    assert list(task.output_dir.parent.iterdir()) == []


def test_peak_memory_is_measured_per_series() -> None:
    block = np.ones(200 * 2**20, dtype=np.uint8)  # 200 MiB touched
    high = peak_rss_mb()
    del block
    assert reset_peak_rss()
    assert peak_rss_mb() < high - 150


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import openvino as ov

    parameter = ov.opset13.parameter([1, 4], np.float32)
    path = tmp_path_factory.mktemp("ir") / "tiny.xml"
    ov.save_model(ov.Model([ov.opset13.relu(parameter)], [parameter]), path)
    return path


def test_a_worker_compiles_a_network_once(tiny_ir: Path) -> None:
    assert compile_for_cpu(tiny_ir, Precision.F32)[0] is not compile_for_cpu(tiny_ir, Precision.F32)[0]  # default: none kept
    keep_compiled(1)
    try:
        first = compile_for_cpu(tiny_ir, Precision.F32)[0]
        assert compile_for_cpu(tiny_ir, Precision.F32)[0] is first
        assert compile_for_cpu(tiny_ir, Precision.F32, threads=1)[0] is not first  # other settings: another network
        assert compile_for_cpu(tiny_ir, Precision.F32)[0] is not first  # only the last one is kept
    finally:
        keep_compiled(0)  # the rest of this test process compiles as a single command does
    network = Network(tiny_ir, Precision.F32)
    assert np.array_equal(network(np.array([[-1, 2, -3, 4]], dtype=np.float32)), [[0, 2, 0, 4]])
