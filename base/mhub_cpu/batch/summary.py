"""``OUT/batch.json`` and ``OUT/batch.csv``: one row per series (and per unreadable file).

Each row says what happened (status, reason), where the outputs are, how long the stages took
(read, inference, write and the rest, from the per-stage timings the jobs record), the peak memory
of the series, the worker that ran it, and the job's key results: the structures found
(segment) or the verdict and body part (bodypart).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from mhub_cpu.batch.outcome import SeriesOutcome, Status
from mhub_cpu.batch.tasks import TaskResult
from mhub_cpu.core.files import write_atomic, write_json
from mhub_cpu.segment.job import WRITE_STAGES

BATCH_JSON = "batch.json"
BATCH_CSV = "batch.csv"
FIELDS = (
    "input_root", "study_uid", "series_uid", "status", "reason", "modality", "series_description", "header_body_part", "files",
    "output_dir", "worker", "seconds_total", "seconds_read", "seconds_inference", "seconds_write", "seconds_other", "peak_rss_mb",
)
#: The key results of each job, as columns.
JOB_FIELDS = {"segment": ("structures_found", "structures"), "bodypart": ("verdict", "body_part")}


def stage_split(stages: dict[str, float], total: float) -> dict[str, float]:
    """Seconds reading, in inference (every stage named ``inference…``), writing and the rest of ``total``."""
    read = stages.get("read input", 0.0)
    inference = sum(seconds for name, seconds in stages.items() if name.startswith("inference"))
    write = sum(stages.get(name, 0.0) for name in WRITE_STAGES)
    return {
        "seconds_read": round(read, 3), "seconds_inference": round(inference, 3), "seconds_write": round(write, 3),
        "seconds_other": round(max(0.0, total - read - inference - write), 3),
    }


def summary_row(outcome: SeriesOutcome, result: TaskResult | None = None, results: dict | None = None) -> dict:
    """The row of one series: its outcome, and what its run (``result``, None when it did not run now)
    measured; ``results`` are the key results of a series complete from an earlier run."""
    row: dict = {
        "input_root": str(outcome.input_root), "study_uid": outcome.study_uid, "series_uid": outcome.series_uid,
        "status": outcome.status.value, "reason": outcome.reason, "modality": outcome.modality,
        "series_description": outcome.series_description, "header_body_part": outcome.header_body_part,
        "files": outcome.files, "output_dir": str(outcome.output_dir) if outcome.output_dir else None,
        "worker": None, "seconds_total": None, "seconds_read": None, "seconds_inference": None, "seconds_write": None,
        "seconds_other": None, "peak_rss_mb": None,
    }
    if result is not None:
        row.update(
            worker=result.worker, seconds_total=round(result.seconds, 3), **stage_split(result.stages_s, result.seconds),
            peak_rss_mb=round(result.peak_rss_mb, 1) if result.peak_rss_mb is not None else None,
        )
    row.update(result.results if result is not None else results or {})
    return row


def write_summary(out_dir: Path, kind: str, rows: Sequence[dict], header: dict) -> tuple[Path, Path]:
    """Write ``batch.json`` (``header``, counts per status, the rows) and ``batch.csv`` (the rows), atomically."""
    counts = Counter(row["status"] for row in rows)
    write_json(out_dir / BATCH_JSON, {**header, "counts": {status.value: counts.get(status.value, 0) for status in Status}, "series": list(rows)})
    columns = FIELDS + JOB_FIELDS[kind]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: "" if row.get(name) is None else row.get(name) for name in columns})
    write_atomic(out_dir / BATCH_CSV, text.getvalue().encode())
    return out_dir / BATCH_JSON, out_dir / BATCH_CSV
