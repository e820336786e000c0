"""``run_batch``: find the series, skip those already complete, run the rest on Dask, summarise.

The job is prepared before (model resolved and converted once, on the client). Each series is one
Dask task asking for its memory budget; a failed series is an error record and a row, never the end
of the batch; a worker that dies mid-series has its series run again elsewhere, up to ``retries``
times. Ctrl-C or SIGTERM cancels what is queued, closes the cluster, removes partial outputs and
still writes the summary (the rows not finished say "interrupted") before the command exits 130
(143 for SIGTERM).
"""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Sequence
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distributed import Future, as_completed
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from mhub_cpu.batch.cluster import MEMORY_RESOURCE, ClusterOptions, open_cluster
from mhub_cpu.batch.collection import CollectionSeries, find_series, folder_name
from mhub_cpu.batch.jobs import BatchJob, SeriesInput, series_key
from mhub_cpu.batch.outcome import SeriesOutcome, Status
from mhub_cpu.batch.progress import BatchProgress
from mhub_cpu.batch.summary import BATCH_CSV, summary_row, write_summary
from mhub_cpu.batch.tasks import SeriesTask, TaskResult, record_failure, run_series
from mhub_cpu.core.errors import InputError
from mhub_cpu.core.files import STAGING_PREFIX, prepare_output_dir
from mhub_cpu.core.progress import log
from mhub_cpu.core.versions import package_versions

#: Per-series logs (what the single-series command prints on stderr), one file per series.
LOGS = "logs"
INTERRUPTED_REASON = "the batch was interrupted (Ctrl-C or SIGTERM) before this series finished"


@dataclass(frozen=True)
class BatchRequest:
    """A prepared job over the collection under ``roots``, results in ``output_dir``."""

    roots: tuple[Path, ...]
    output_dir: Path
    job: BatchJob
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    force: bool = False


@dataclass
class BatchSummary:
    """What a batch did: one outcome and one summary row per series, and the files written."""

    outcomes: list[SeriesOutcome]
    rows: list[dict]
    files: list[Path]
    interrupted: bool = False

    def count(self, status: Status) -> int:
        return sum(outcome.status is status for outcome in self.outcomes)


class _Rows:
    """The outcome and summary row of every entry, in collection order, filled in as series finish."""

    def __init__(self, entries: Sequence[CollectionSeries]) -> None:
        self.entries = entries
        self.outcomes: list[SeriesOutcome | None] = [None] * len(entries)
        self.rows: list[dict | None] = [None] * len(entries)

    def set(self, index: int, status: Status, reason: str, output_dir: Path | None, result: TaskResult | None = None,
            results: dict | None = None) -> None:
        entry = self.entries[index]
        outcome = SeriesOutcome(
            input_root=entry.input_root, study_uid=entry.study_uid, series_uid=entry.series_uid, status=status, reason=reason,
            output_dir=output_dir, header_body_part=entry.header_body_part, modality=entry.modality or None,
            series_description=entry.description or None, files=len(entry.files),
        )
        self.outcomes[index] = outcome
        self.rows[index] = summary_row(outcome, result, results)

    def count(self, status: Status) -> int:
        return sum(outcome is not None and outcome.status is status for outcome in self.outcomes)


def run_batch(request: BatchRequest) -> BatchSummary:
    """Run ``request.job`` on every series of the collection; see the module docstring.

    Raises:
        InputError: the roots hold no series to run (the summary is written first), or the
            cluster cannot be planned or reached.
        KeyboardInterrupt: after Ctrl-C / SIGTERM, once the summary is written.
    """
    started = datetime.now(UTC)
    start = time.perf_counter()
    out = prepare_output_dir(request.output_dir)
    entries = find_series(request.roots, exclude=out)
    job = request.job
    budget = job.default_budget_mb()
    table = _Rows(entries)
    pending: list[tuple[int, SeriesTask]] = []
    for index, entry in enumerate(entries):
        if not entry.runnable:
            table.set(index, Status.NOT_RUN, entry.reason, None)
            continue
        output_dir = entry.output_dir(out)
        prepare_output_dir(output_dir.parent)  # staging folders an earlier, killed batch left
        key = series_key(job.key_base, entry.files)
        record = None if request.force else job.complete(output_dir, key)
        if record is not None:
            table.set(index, Status.SKIPPED, "", output_dir, results=job.key_results(record))
            continue
        series = SeriesInput(entry.study_uid, entry.series_uid, entry.files, entry.input_dir)
        pending.append((index, SeriesTask(series, output_dir, key, out / LOGS / f"{folder_name(entry.series_uid)}.log")))
    skipped = table.count(Status.SKIPPED)
    log(f"{len(entries)} rows: {len(pending)} series to run, {skipped} complete from an earlier run, "
        f"{table.count(Status.NOT_RUN)} not run (reasons in {out / BATCH_CSV})")
    header: dict[str, Any] = {
        "tool": "mhub-cpu batch", "versions": package_versions(), "job": job.describe(), "inputs": [str(r) for r in request.roots],
        "output": str(out), "force": request.force, "memory_budget_mb": budget, "retries": request.cluster.retries,
        "started": started.isoformat(timespec="seconds"), "cluster": None,
    }
    interrupted = False
    try:
        if pending:
            header["cluster"], header["job"]["threads"] = _run_pending(job, pending, table, request.cluster, budget)
    except BaseException as exc:  # every series still gets its row, then the cause goes on
        interrupted = isinstance(exc, KeyboardInterrupt)
        status, reason = (Status.INTERRUPTED, INTERRUPTED_REASON) if interrupted else (Status.NOT_RUN, f"the batch stopped: {exc}")
        for index, _ in pending:
            if table.outcomes[index] is None:
                table.set(index, status, reason, None)
        raise
    finally:
        _remove_partial({task.output_dir.parent for _, task in pending})
        header.update(wall_s=round(time.perf_counter() - start, 3), interrupted=interrupted)
        rows = [row for row in table.rows if row is not None]
        summary = BatchSummary(
            [o for o in table.outcomes if o is not None], rows, list(write_summary(out, job.kind, rows, header)), interrupted,
        )
    if not pending and not skipped:
        raise InputError(f"no CT series to run under {', '.join(str(r) for r in request.roots)} (see {out / BATCH_CSV})")
    summary.files += _reports(job.kind, summary.outcomes, out)
    return summary


def _run_pending(
    job: BatchJob, pending: Sequence[tuple[int, SeriesTask]], table: _Rows, options: ClusterOptions, budget: float,
) -> tuple[str, int | None]:
    """Submit every pending series and record each as it finishes; returns the cluster's description
    and the OpenVINO threads of each worker."""
    with open_cluster(options, budget) as (client, threads, description):
        log(description)
        worker_job = job.with_threads(threads)
        token = secrets.token_hex(4)
        futures = {
            client.submit(
                run_series, worker_job, task, key=f"series-{index}-{token}", resources={MEMORY_RESOURCE: budget}, pure=False,
            ): (index, task)
            for index, task in pending
        }
        progress = BatchProgress(len(futures))
        try:
            for future in as_completed(futures):
                index, task = futures[future]
                result = _result_of(future, options.retries)
                if isinstance(result, str):  # the task never finished on a worker: its error record is written here
                    result = record_failure(job, task, result)
                table.set(index, result.status, result.reason, task.output_dir, result)
                progress.finished(task.series.series_uid, result.status, result.seconds, result.reason)
        except KeyboardInterrupt:
            client.cancel(list(futures), force=True)
            raise
        finally:
            progress.close()
    return description, threads


def _remove_partial(study_dirs: set[Path]) -> None:
    """Remove the staging folders that workers killed or interrupted in this batch left (their
    processes are gone once the cluster is closed)."""
    removed = 0
    for study_dir in sorted(d for d in study_dirs if d.is_dir()):
        before = len(list(study_dir.glob(STAGING_PREFIX + "*")))
        with redirect_stderr(io.StringIO()):  # one line below, not one per folder
            prepare_output_dir(study_dir)
        removed += before - len(list(study_dir.glob(STAGING_PREFIX + "*")))
    if removed:
        log(f"removed the partial outputs of {removed} series whose workers were stopped")


def _result_of(future: Future, retries: int) -> TaskResult | str:
    """The worker's result, or why the task did not finish: its workers kept dying, or it could not run."""
    try:
        return future.result()
    except KilledWorker:
        return f"the worker running this series died {retries + 1} times (killed, or past its memory limit); not tried again"
    except FutureCancelledError:
        return "cancelled by the Dask cluster"
    except Exception as exc:  # noqa: BLE001 - whatever stopped the task fails this series only
        return f"the task could not run: {type(exc).__name__}: {' '.join(str(exc).split())}"


def _reports(kind: str, outcomes: list[SeriesOutcome], out: Path) -> list[Path]:
    """The collection reports of the batch's job (built by :mod:`mhub_cpu.batch.reports`)."""
    from mhub_cpu.batch.reports import write_qa_report, write_statistics

    if kind == "segment":
        return [write_statistics(outcomes, out)]
    return list(write_qa_report(outcomes, out))
