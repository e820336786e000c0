"""``mhub-cpu batch segment|bodypart``: one job over every CT series under one or more folders, on Dask."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mhub_cpu.cli.options import (
    add_bodypart_model,
    add_bodypart_options,
    add_model,
    add_precision,
    add_seg_type,
    add_window_options,
    bodypart_options,
    inference_settings,
)
from mhub_cpu.core.errors import ProcessingError

if TYPE_CHECKING:
    from mhub_cpu.batch.jobs import BatchJob


#: ``--dashboard`` without an address: loopback, a free port.
LOOPBACK_DASHBOARD = "127.0.0.1:0"

def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``batch`` with its two jobs, ``segment`` and ``bodypart`` (the single-series commands' options)."""
    parser = subparsers.add_parser(
        "batch",
        help="run segment or bodypart on every CT series under one or more folders (Dask: local or a cluster)",
        description="Find every CT series under the --input folders (nested folders, many studies, other files are "
        "fine) and run the job on each, on a local Dask cluster or an existing one (--scheduler). Each series' "
        "outputs go to OUTPUT/<StudyInstanceUID>/<SeriesInstanceUID>/, the same files as the single-series command; "
        "OUTPUT/batch.json and batch.csv list every series with its status. A rerun skips series complete for the "
        "same model and settings.",
    )
    jobs = parser.add_subparsers(dest="job", required=True, metavar="{segment,bodypart}")
    segment = jobs.add_parser("segment", help="mhub-cpu segment on every series", description="mhub-cpu segment on every CT series.")
    _add_batch_options(segment, "for segment also the inference budget: windows shrink to fit, as for `mhub-cpu segment` "
                                "(default: the memory model's estimate for a typical CT at the model's own window, not passed to inference)")
    add_model(segment)
    add_precision(segment)
    add_window_options(segment)
    add_seg_type(segment)
    segment.set_defaults(func=_run_segment)
    bodypart = jobs.add_parser("bodypart", help="mhub-cpu bodypart on every series", description="mhub-cpu bodypart on every CT series.")
    _add_batch_options(bodypart, "default 1500")
    add_bodypart_model(bodypart)
    add_bodypart_options(bodypart)
    bodypart.set_defaults(func=_run_bodypart)


def _add_batch_options(parser: argparse.ArgumentParser, memory_note: str) -> None:
    parser.add_argument("--input", required=True, action="append", type=Path, metavar="ROOT",
                        help="a folder to search for DICOM series (repeat for several roots)")
    parser.add_argument("--output", required=True, type=Path, help="folder for the results (created if needed)")
    parser.add_argument("--workers", type=int, metavar="N", help="worker processes (default: as many as cores allow and memory holds at --max-memory each)")
    parser.add_argument("--threads-per-worker", type=int, metavar="N", help="OpenVINO threads of each worker (default: cores / workers, at most 4)")
    parser.add_argument("--max-memory", dest="max_memory_mb", type=float, metavar="MIB", help=f"memory budget in MiB of one series; {memory_note}")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="address of an existing Dask scheduler (e.g. tls://host:8786, or tcp:// on this machine) whose workers offer the 'memory' "
                        "resource (--resources memory=MIB); default: a local cluster on this machine")
    parser.add_argument("--tls-ca-file", metavar="PEM", help="a tls:// scheduler: the CA certificate that signed the cluster's "
                        "certificates (default: Dask's configuration, distributed.comm.tls.ca-file)")
    parser.add_argument("--tls-cert", metavar="PEM", help="a tls:// scheduler: this client's certificate (default: Dask's configuration)")
    parser.add_argument("--tls-key", metavar="PEM", help="a tls:// scheduler: this client's private key (default: Dask's configuration)")
    parser.add_argument("--dashboard", nargs="?", const=LOOPBACK_DASHBOARD, metavar="ADDRESS",
                        help="serve the local cluster's Dask dashboard (task names, worker logs, paths) at ADDRESS "
                        f"(default without ADDRESS: {LOOPBACK_DASHBOARD}, this machine only, a free port); off unless given")
    parser.add_argument("--retries", type=int, default=2, metavar="N",
                        help="times a series is run again after its worker died (killed, out of memory) (default 2; a local cluster only)")
    parser.add_argument("--force", action="store_true", help="run every series again, also those complete from an earlier run")


def _run_segment(args: argparse.Namespace) -> int:
    from mhub_cpu.batch.jobs import SegmentJob
    from mhub_cpu.outputs.dicom_seg import SegmentationType

    _check_paths(args)
    settings = inference_settings(args, None)
    job = SegmentJob.prepare(args.model, settings, SegmentationType(args.segmentation_type), tuple(args.calibration), args.trust_model)
    return _run(args, job)


def _run_bodypart(args: argparse.Namespace) -> int:
    from mhub_cpu.batch.jobs import BodypartJob

    _check_paths(args)
    return _run(args, BodypartJob.prepare(args.model, bodypart_options(args), args.max_memory_mb))


def _check_paths(args: argparse.Namespace) -> None:
    """The roots and the output folder, refused at once (before a model download or conversion)."""
    from mhub_cpu.core.files import prepare_output_dir
    from mhub_cpu.dicomio import check_input_path

    for root in args.input:
        check_input_path(root)
    prepare_output_dir(args.output)


def _run(args: argparse.Namespace, job: BatchJob) -> int:
    from mhub_cpu.batch.cluster import ClusterOptions
    from mhub_cpu.batch.outcome import Status
    from mhub_cpu.batch.runner import BatchRequest, run_batch
    from mhub_cpu.core.progress import log

    cluster = ClusterOptions(args.workers, args.threads_per_worker, args.scheduler, args.retries, args.dashboard,
                             args.tls_ca_file, args.tls_cert, args.tls_key)
    summary = run_batch(BatchRequest(tuple(args.input), args.output, job, cluster, args.force))
    counts = {status: summary.count(status) for status in Status}
    log("batch finished: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n))
    for path in summary.files:
        print(path)
    failed = counts[Status.FAILED]
    if failed:
        raise ProcessingError(f"{failed} of {len(summary.outcomes)} series failed; their reasons are in {summary.files[1]}")
    return 0
