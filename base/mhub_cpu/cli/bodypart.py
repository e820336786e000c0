"""``mhub-cpu bodypart`` (CT quality assurance with Body Part Regression) and ``mhub-cpu bodypart-convert``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mhub_cpu.cli.options import add_bodypart_model, add_bodypart_options, bodypart_options
from mhub_cpu.runtime.precision import Precision


def _run(args: argparse.Namespace) -> int:
    from mhub_cpu.bodypart.modelfiles import resolve_model
    from mhub_cpu.bodypart.pipeline import run, write_error_record
    from mhub_cpu.core.files import prepare_output_dir
    from mhub_cpu.dicomio import check_input_path

    prepare_output_dir(Path(args.output))
    try:
        check_input_path(Path(args.input))  # at once, not after a model download
        model = resolve_model(args.model)
    except BaseException as exc:  # no input or no model: still leave an error record
        write_error_record(Path(args.output), exc, {"path": str(args.input)})
        raise
    run(Path(args.input), Path(args.output), model, bodypart_options(args, args.series_uid))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from mhub_cpu.bodypart.model import ir_path
    from mhub_cpu.bodypart.modelfiles import resolve_model
    from mhub_cpu.bodypart.pipeline import score_agreement
    from mhub_cpu.core.cache import sha256_of

    model = resolve_model(args.model)
    precision = Precision(args.precision)
    calibration = [Path(p) for p in args.calibration] if args.calibration else None
    facts = {
        "model": str(model.path), "weights_sha256": sha256_of(model.weights), "precision": precision.to_json(),
        "ir": str(ir_path(model, precision, calibration)),
    }
    if precision is not Precision.F32:  # measured once here, where --precision auto reads it
        facts["agreement_with_f32"] = score_agreement(model, precision, calibration)
    print(json.dumps(facts, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bodypart`` and ``bodypart-convert`` subcommands."""
    parser = subparsers.add_parser(
        "bodypart",
        help="CT quality assurance with Body Part Regression (bpreg.json, qa.json, DICOM SR)",
        description="Score every axial slice on bpreg's head-to-toe scale and write bpreg.json, qa.json, "
        "two TID 1500 SRs (DICOM input) and an optional crop between two landmarks.",
    )
    parser.add_argument("--input", required=True, help="DICOM folder or NIfTI file of a CT")
    parser.add_argument("--output", required=True, help="output folder")
    add_bodypart_model(parser)
    add_bodypart_options(parser)
    parser.add_argument("--series", "--series-uid", dest="series_uid", default=None, help="Series Instance UID when the folder holds several CT series")
    parser.set_defaults(func=_run)

    convert = subparsers.add_parser(
        "bodypart-convert",
        help="convert (and for int8 quantise) the bpreg model to cached OpenVINO IR ahead of time (needs torch)",
    )
    add_bodypart_model(convert, auto=False)
    convert.set_defaults(func=_convert)
