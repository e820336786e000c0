"""``mhub-cpu bodypart`` (CT quality assurance with Body Part Regression) and ``mhub-cpu bodypart-convert``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mhub_cpu.bodypart.model import PRECISIONS
from mhub_cpu.runtime.precision import Precision


def _run(args: argparse.Namespace) -> int:
    from mhub_cpu.bodypart.modelfiles import resolve_model
    from mhub_cpu.bodypart.pipeline import Options, run, write_error_record
    from mhub_cpu.core.files import prepare_output_dir
    from mhub_cpu.dicomio import check_input_path

    prepare_output_dir(Path(args.output))
    try:
        check_input_path(Path(args.input))  # at once, not after a model download
        model = resolve_model(args.model)
    except BaseException as exc:  # no input or no model: still leave an error record
        write_error_record(Path(args.output), exc, {"path": str(args.input)})
        raise
    options = Options(
        precision=Precision(args.precision), fast=args.fast, crop_from=args.crop_from, crop_to=args.crop_to, series_uid=args.series_uid,
        calibration=[Path(p) for p in args.calibration] if args.calibration else None,
    )
    run(Path(args.input), Path(args.output), model, options)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from mhub_cpu.bodypart.model import ir_path
    from mhub_cpu.bodypart.modelfiles import resolve_model
    from mhub_cpu.core.cache import sha256_of

    model = resolve_model(args.model)
    precision = Precision(args.precision)
    calibration = [Path(p) for p in args.calibration] if args.calibration else None
    print(json.dumps({
        "model": str(model.path), "weights_sha256": sha256_of(model.weights), "precision": precision.to_json(),
        "ir": str(ir_path(model, precision, calibration)),
    }, indent=2))
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
    _add_model_options(parser)
    parser.add_argument("--fast", action="store_true", help="score one slice every 2.5 mm and interpolate (approximate)")
    parser.add_argument("--crop-from", default=None, help="landmark where the cropped NIfTI starts, e.g. L5")
    parser.add_argument("--crop-to", default=None, help="landmark where the cropped NIfTI ends, e.g. Th1")
    parser.add_argument("--series", "--series-uid", dest="series_uid", default=None, help="Series Instance UID when the folder holds several CT series")
    parser.set_defaults(func=_run)

    convert = subparsers.add_parser(
        "bodypart-convert",
        help="convert (and for int8 quantise) the bpreg model to cached OpenVINO IR ahead of time (needs torch)",
    )
    _add_model_options(convert)
    convert.set_defaults(func=_convert)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="bpreg model directory or zip URL (default: public model from Zenodo, cached)")
    parser.add_argument(
        "--precision", choices=[p.value for p in PRECISIONS], default=Precision.F32.value,
        help="OpenVINO inference precision (default f32; bf16 on CPUs with native bf16; int8: NNCF-quantised, approximate)",
    )
    parser.add_argument("--calibration", nargs="+", default=None, metavar="CT",
                        help="int8: CT NIfTI files or DICOM folders to calibrate on (default: the engine's calibration CT, "
                        "configs/calibration/)")
