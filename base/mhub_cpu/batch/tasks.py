"""What a worker does for one series: run the job in a staging folder, publish it whole.

The job writes into a hidden staging folder beside the series' output folder (named after the
host and process, as every staging folder of the engine is); the folder is renamed into place only
when the job is complete or its error record is written. A worker killed mid-series leaves only
its staging folder, which the next task in that study folder (or the end of the batch) removes
once its process is gone; the scheduler runs the series again on another worker. A job that fails
publishes its error record (``error.json`` for segment, ``qa.json`` with ``"status": "error"`` for
bodypart) and the batch goes on.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import socket
import time
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path

from mhub_cpu.batch.jobs import BatchJob, SeriesInput
from mhub_cpu.batch.outcome import Status
from mhub_cpu.core.errors import MhubCpuError, ProcessingError
from mhub_cpu.core.files import STAGING_PREFIX, prepare_output_dir, write_atomic, write_json
from mhub_cpu.core.progress import peak_rss_mb
from mhub_cpu.runtime.network import keep_compiled

#: Compiled networks a worker keeps between series: the job's network. One, not more: a kept
#: network stays in memory, and a series whose window differs (sparse windows fitted to a short
#: axis) would otherwise hold two against one memory budget.
KEPT_NETWORKS = 1


@dataclass(frozen=True)
class SeriesTask:
    """One series to run: its input, where its result goes, its job key, where its log goes."""

    series: SeriesInput
    output_dir: Path
    key: str
    log_path: Path


@dataclass(frozen=True)
class TaskResult:
    """What a worker reports back for a series (the summary's row is built from it)."""

    status: Status
    reason: str
    seconds: float
    stages_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    worker: str = ""
    results: dict = field(default_factory=dict)


def worker_name() -> str:
    """``host:pid`` of this process: which worker ran a series (a restarted worker has a new pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def staging_name(suffix: str = "") -> str:
    """A staging folder name that :func:`~mhub_cpu.core.files.prepare_output_dir` removes once this
    process is gone."""
    return f"{STAGING_PREFIX}{socket.gethostname()}-pid{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def reset_peak_rss() -> bool:
    """Restart this process's peak-RSS count (``VmHWM``) so that it measures one series, not the
    worker's life (Linux: writing 5 to ``/proc/self/clear_refs``). False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def run_series(job: BatchJob, task: SeriesTask) -> TaskResult:
    """Run ``job`` on one series and publish its outputs (or error record) in ``task.output_dir``.

    Raises only what must stop the batch (KeyboardInterrupt, SystemExit), after removing the
    staging folder; every failure of the job itself becomes a published error record.
    """
    start = time.perf_counter()
    keep_compiled(KEPT_NETWORKS)
    per_series_peak = reset_peak_rss()
    messages = io.StringIO()
    with redirect_stderr(messages):  # the progress bar owns the terminal; the log goes to a file
        study_dir = prepare_output_dir(task.output_dir.parent)  # also removes staging folders of dead workers
    staging = study_dir / staging_name()
    staging.mkdir()
    try:
        with redirect_stderr(messages):
            try:
                job.run(task.series, staging)
                status, reason, name = Status.DONE, "", job.record
                record = json.loads((staging / name).read_text())
            except Exception as exc:  # noqa: BLE001 - any failure of one series is its error record, not the batch's
                status, reason, name = Status.FAILED, _reason(exc), job.error_file
                record = job.failure_record(staging, exc, task.series)
            write_json(staging / name, {**record, "batch": {"job_key": task.key, "worker": worker_name()}})
        _publish(staging, task.output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_atomic(task.log_path, messages.getvalue().encode())
    return TaskResult(
        status=status, reason=reason, seconds=time.perf_counter() - start, stages_s=job.stage_seconds(record),
        peak_rss_mb=peak_rss_mb() if per_series_peak else None, worker=worker_name(),
        results=job.key_results(record) if status is Status.DONE else {},
    )


def record_failure(job: BatchJob, task: SeriesTask, reason: str) -> TaskResult:
    """Publish the error record of a series that no worker finished (its workers died, say)."""
    staging = prepare_output_dir(task.output_dir.parent) / staging_name()
    staging.mkdir()
    try:
        record = job.failure_record(staging, ProcessingError(reason), task.series)
        write_json(staging / job.error_file, {**record, "batch": {"job_key": task.key, "worker": None}})
        _publish(staging, task.output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TaskResult(status=Status.FAILED, reason=reason, seconds=0.0)


def _reason(exc: Exception) -> str:
    """The one line the command would print for this failure."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, MhubCpuError) else f"internal error: {type(exc).__name__}: {text}"


def _publish(staging: Path, final: Path) -> None:
    """Put the complete staging folder in place of ``final`` (any earlier result there goes).

    Two renames: the earlier folder to a staging name (removed after, or by the next sweep if this
    process dies in between), then the new one into place.
    """
    previous = None
    if final.exists():
        previous = final.parent / staging_name("-replaced")
        final.rename(previous)
    staging.rename(final)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
