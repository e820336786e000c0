"""``mhub-cpu mhub-run``: run an MHub model folder's workflow locally through mhubio."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from mhub_cpu.core.progress import log
    from mhub_cpu.mhub.workflow import run_workflow, use_this_engine

    use_this_engine()
    written = run_workflow(args.model, args.workflow, args.input, args.output, tuple(args.set))
    log(f"workflow {args.model}/{args.workflow} wrote {len(written)} files")
    for path in written:
        print(path)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``mhub-run`` subcommand."""
    parser = subparsers.add_parser(
        "mhub-run",
        help="run an MHub model workflow (models/<model>/config/<workflow>.yml) through mhubio, as mhub.run does in the image",
        description="Run an MHub workflow locally: the input folder plays /app/data/input_data and the output folder "
        "/app/data/output_data. Exits non-zero when an instance did not produce every organised output.",
    )
    parser.add_argument("--model", required=True, help="model folder name under models/, e.g. abdominal_openvino or bpreg")
    parser.add_argument("--workflow", default="default", help="workflow name (config/<name>.yml; default: default)")
    parser.add_argument("--input", required=True, type=Path, help="input folder (DICOM files, or <case>.nii.gz files for NIfTI workflows)")
    parser.add_argument("--output", required=True, type=Path, help="output folder (created if needed)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a workflow setting like mhub.run's --config:KEY=VALUE, e.g. modules.Auto3DSegOpenVINORunner.model=demo (repeatable)",
    )
    parser.set_defaults(func=_run)
