"""``mhub-cpu mhub-run``: run an MHub model folder's workflow locally through production mhubio, in its own environment."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import mhub_cpu
from mhub_cpu.core.errors import InputError
from mhub_cpu.core.progress import log
from mhub_cpu.core.resources import mhubio_python


def _run(args: argparse.Namespace) -> int:
    """Run the workflow with mhubio's own Python (see :mod:`mhub_cpu.mhub.workflow`); its modules call this
    installation's engine (``$MHUB_CPU_BIN``, unless already set)."""
    python = mhubio_python()
    if not python.exists():
        raise InputError(f"mhubio's environment is missing ({python}): run make, or set MHUB_CPU_MHUBIO_PYTHON")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(mhub_cpu.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "MHUB_CPU_BIN": os.environ.get("MHUB_CPU_BIN") or f"{shlex.quote(sys.executable)} -m mhub_cpu.cli",
    }
    command = [str(python), "-m", "mhub_cpu.mhub.workflow", args.model, args.workflow, str(args.input), str(args.output), *args.set]
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    written = result.stdout.splitlines()
    if result.returncode == 0:
        log(f"workflow {args.model}/{args.workflow} wrote {len(written)} files")
    print(result.stdout, end="")
    return result.returncode


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
