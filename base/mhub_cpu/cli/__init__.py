"""The ``mhub-cpu`` command line: options are parsed into the engine's types here, and nowhere else."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from mhub_cpu import __version__
from mhub_cpu.cli.batch import register as register_batch
from mhub_cpu.cli.bodypart import register as register_bodypart
from mhub_cpu.cli.mhub import register as register_mhub
from mhub_cpu.cli.options import add_model, add_precision, add_seg_type, add_window_options, apply_release_options, choices, inference_settings
from mhub_cpu.cli.slicer import register as register_slicer
from mhub_cpu.core.errors import MhubCpuError
from mhub_cpu.core.progress import log
from mhub_cpu.outputs.dicom_seg import SegmentationType
from mhub_cpu.runtime.precision import Precision


def _add_segment(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment a CT (DICOM folder or NIfTI) with an Auto3DSeg model on OpenVINO",
        description="Segment a CT series with a MONAI Auto3DSeg model converted to OpenVINO. Writes "
        "segmentation.dcm (DICOM-SEG, for DICOM input), segmentation.nii.gz, preview.png and report.json.",
    )
    parser.add_argument("--input", required=True, type=Path, help="folder of DICOM files (any nesting) or a NIfTI file")
    parser.add_argument("--output", required=True, type=Path, help="folder for the results (created if needed)")
    add_model(parser)
    parser.add_argument("--series", dest="series_uid", help="Series Instance UID to process when the folder holds several CT series")
    add_precision(parser)
    add_window_options(parser)
    parser.add_argument(
        "--max-memory", dest="max_memory_mb", type=float,
        help="memory budget in MiB for inference: windows are shrunk until the estimated peak fits (default: no limit)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads for OpenVINO (default: all cores)")
    add_seg_type(parser)
    parser.set_defaults(func=_run_segment)


def _run_segment(args: argparse.Namespace) -> int:
    from mhub_cpu.segment.job import SegmentRequest, run_segment

    settings = inference_settings(args, args.threads)
    request = SegmentRequest(
        input_path=args.input, output_dir=args.output, model=args.model, series_uid=args.series_uid, settings=settings,
        segmentation_type=SegmentationType(args.segmentation_type), calibration=tuple(args.calibration),
        trust_model=args.trust_model,
    )
    report = run_segment(request)
    found = [s["name"] for s in report["result"]["segments"] if s["voxels"]]
    log(f"done in {report['total_s']:.1f} s, peak memory {report['peak_rss_mb']:.0f} MiB, {len(found)} structures found")
    for name in report["outputs"].values():
        print(args.output / name)
    return 0


#: Where ``mhub-cpu demo`` writes without ``--output``: a folder of the current directory.
DEMO_OUTPUT = Path("mhub-cpu-demo")


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="segment the sample CT shipped with mhub-cpu with its demo model (no input, no download, no torch)",
        description="Segment the sample CT that comes with the package (112-slice abdominal DICOM series, 3 mm) with the "
        "embedded demo model (23 abdominal organs; trained on this one CT, so for trying the engine only), exactly as "
        "`mhub-cpu segment --input <sample> --model demo` would: same progress lines, same outputs (segmentation.dcm, "
        f"segmentation.nii.gz, preview.png, report.json). Writes to ./{DEMO_OUTPUT} unless --output says otherwise.",
    )
    parser.add_argument("--output", type=Path, default=DEMO_OUTPUT, help=f"folder for the results (default: ./{DEMO_OUTPUT}, created if needed)")
    add_precision(parser)
    add_window_options(parser)
    parser.add_argument("--threads", type=int, help="CPU threads for OpenVINO (default: all cores)")
    add_seg_type(parser)
    parser.set_defaults(func=_run_demo, max_memory_mb=None)


def _run_demo(args: argparse.Namespace) -> int:
    from mhub_cpu.core.resources import sample_dicom

    args.input, args.model, args.series_uid, args.trust_model = sample_dicom(), "demo", None, False
    log(f"demo: the sample CT shipped with mhub-cpu ({args.input}) with the demo model, which was trained on this CT only")
    return _run_segment(args)


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert (and for int8 quantise) a model to cached OpenVINO IR ahead of time (needs torch)",
    )
    add_model(parser)
    parser.add_argument(
        "--model-file", type=Path,
        help="instead of --model: a model.pt in 3D Slicer's MONAIAuto3DSeg model folder; model.xml/.bin and "
        "model.openvino.json are written beside it, where slicer-inference uses them without torch",
    )
    add_precision(parser, auto=False)
    parser.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from mhub_cpu.segment.model import prepare_network, resolve_bundle

    if args.model_file is not None:
        from mhub_cpu.slicer.model_folder import convert_model_file

        print(json.dumps(convert_model_file(args.model_file, Precision(args.precision), tuple(args.calibration), args.trust_model), indent=2))
        return 0
    bundle = resolve_bundle(args.model)
    converted = prepare_network(bundle, Precision(args.precision), tuple(args.calibration), args.trust_model)
    print(json.dumps({
        "model": bundle.model_id, "source": str(bundle.source), "source_sha256": bundle.source_sha256,
        "checkpoint_sha256": bundle.checkpoint_sha256, "sha256_known": bundle.sha256_known,
        "xml": str(converted.xml_path), "ir": converted.ir.value, "config": converted.config,
    }, indent=2))
    return 0


def _add_verify(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check a converted model against its PyTorch checkpoint and the MONAI reference (needs torch; image builds run it)",
        description="For each precision: the OpenVINO logits of one window against PyTorch's and the labels of the whole "
        "pipeline against the MONAI reference of the Slicer script, on the engine's calibration CT. Prints the figures as "
        "JSON (and writes them with --output); exits 4 when a precision agrees less than required.",
    )
    add_model(parser)
    parser.add_argument(
        "--precision", nargs="+", choices=choices(Precision), default=[Precision.F32.value], help="precisions to verify (default f32)",
    )
    parser.add_argument("--ct", type=Path, help="CT NIfTI to verify on (default: the engine's calibration CT)")
    parser.add_argument("--output", type=Path, help="JSON file for the figures")
    parser.set_defaults(func=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from mhub_cpu.core.files import write_json
    from mhub_cpu.segment.model import resolve_bundle
    from mhub_cpu.segment.verify import verify_model

    results = verify_model(resolve_bundle(args.model), [Precision(p) for p in args.precision], args.ct)
    if args.output:
        write_json(args.output, results)
    print(json.dumps(results, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mhub-cpu", description="CPU-friendly medical imaging models, the MHub way.")
    parser.add_argument("--version", action="version", version=f"mhub-cpu {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_segment(subparsers)
    _add_demo(subparsers)
    _add_convert(subparsers)
    _add_verify(subparsers)
    register_bodypart(subparsers)
    register_mhub(subparsers)
    register_slicer(subparsers)
    register_batch(subparsers)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is so that staging folders are cleaned up on the way out."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a subcommand; errors become one line ``mhub-cpu: error: …`` and an exit code.

    :class:`MhubCpuError` is a refusal with its own exit code; Ctrl-C exits 130 and SIGTERM 143,
    both after removing partial results. Any other exception is a bug: one line names it (exit
    70); ``MHUB_CPU_DEBUG=1`` shows the traceback.
    """
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if threading.current_thread() is threading.main_thread() else None
    apply_release_options(args)
    try:
        return args.func(args)
    except MhubCpuError as exc:
        print(f"mhub-cpu: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("mhub-cpu: terminated (SIGTERM); partial results removed", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("mhub-cpu: interrupted; partial results removed", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if os.environ.get("MHUB_CPU_DEBUG"):
            raise
        print(
            f"mhub-cpu: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
            "(a bug in mhub-cpu: please report it with the command line; MHUB_CPU_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 70
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

