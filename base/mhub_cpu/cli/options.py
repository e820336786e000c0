"""Job options shared by the single-series commands (``segment``, ``bodypart``) and ``batch``, so that
both say them the same way and parse them into the same settings."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from mhub_cpu.bodypart.model import PRECISIONS as BODYPART_PRECISIONS
from mhub_cpu.outputs.dicom_seg import SegmentationType
from mhub_cpu.runtime.precision import AUTO, Precision
from mhub_cpu.segment.splitter import WindowStrategy
from mhub_cpu.segment.weights import BlendMode

if TYPE_CHECKING:
    from mhub_cpu.bodypart.pipeline import Options
    from mhub_cpu.segment.pipeline import InferenceSettings


def choices(values: Iterable[StrEnum]) -> list[str]:
    """Option choices by their values (argparse lists them as typed); parsed into the enum by the handler."""
    return [value.value for value in values]


def add_model(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--trust-model``, ``--release-url`` and ``--no-download`` of the segmentation commands."""
    parser.add_argument(
        "--model", default="demo",
        help="catalogue model id or name (e.g. abdominal-organs, downloaded once into the cache), a local "
        "model zip/folder, or 'demo' (the embedded demo model, default)",
    )
    parser.add_argument(
        "--trust-model", action="store_true",
        help="trust the model file: unpickle model.pt with PyTorch's full unpickler and build its network with "
        "MONAI's ConfigParser, both of which can run code in the file; only for a checkpoint you trust that "
        "holds types beyond tensors and plain containers or a network outside the closed schema (default: refused)",
    )
    parser.add_argument(
        "--release-url", metavar="URL",
        help="where pre-converted IRs are downloaded from when a model's IR is not cached: a release's folder "
        "(manifest.json beside its assets; default $MHUB_CPU_RELEASE_URL, else the project's GitHub release)",
    )
    parser.add_argument(
        "--no-download", action="store_true",
        help="never download a pre-converted IR (the packaged release and a local conversion only; $MHUB_CPU_NO_DOWNLOAD=1)",
    )


def apply_release_options(args: argparse.Namespace) -> None:
    """``--release-url`` and ``--no-download`` as the environment variables the engine (and a batch's
    workers, which inherit the environment) read."""
    if getattr(args, "release_url", None):
        os.environ["MHUB_CPU_RELEASE_URL"] = args.release_url
    if getattr(args, "no_download", False):
        os.environ["MHUB_CPU_NO_DOWNLOAD"] = "1"


def add_precision(parser: argparse.ArgumentParser, auto: bool = True) -> None:
    """``--precision`` and ``--calibration`` of the segmentation commands (``convert``: ``auto=False``, f32
    by default, since it converts one precision named)."""
    parser.add_argument(
        "--precision", choices=[AUTO, *choices(Precision)] if auto else choices(Precision), default=AUTO if auto else "f32",
        help="auto (default): bf16 where the CPU runs it natively, else int8 where it has INT8 kernels, each only where "
        "its agreement with f32 on the calibration CT holds (Dice mean >= 0.99, min >= 0.95), else f32; f32: fp32 "
        "weights and compute (closest to the reference); bf16: bfloat16 compute (CPUs with native bf16); fp16: "
        "fp16-compressed weights, f32 compute; int8: NNCF INT8 quantisation calibrated on CT (see --calibration)",
    )
    parser.add_argument(
        "--calibration", nargs="+", type=Path, default=(),
        help="CT NIfTI files to calibrate INT8 on (default: the engine's calibration CT, configs/calibration/)",
    )


def _precision(value: str) -> Precision:
    """The ``--precision`` given; f32 as the placeholder for ``auto`` (chosen per model once it is resolved)."""
    return Precision.F32 if value == AUTO else Precision(value)


def add_window_options(parser: argparse.ArgumentParser) -> None:
    """How the sliding window runs: ``--overlap``, ``--blend``, ``--windows``, ``--skip-air``."""
    parser.add_argument("--overlap", type=float, default=0.625, help="window overlap fraction (default 0.625, as Slicer)")
    parser.add_argument("--blend", choices=choices(BlendMode), default=BlendMode.GAUSSIAN.value, help="window blending (default gaussian)")
    parser.add_argument(
        "--windows", dest="strategy", choices=choices(WindowStrategy), default=WindowStrategy.DENSE.value,
        help="window placement: dense (MONAI's grid at --overlap, as Slicer; default), sparse (fewest windows "
        "with at least --overlap shared, short axes get a fitted window), whole (one window over the volume)",
    )
    parser.add_argument("--skip-air", action="store_true", help="do not run windows that hold only air (< -950 HU)")


def add_seg_type(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seg-type", dest="segmentation_type", choices=choices(SegmentationType), default=SegmentationType.BINARY.value,
        help="DICOM-SEG type: BINARY (default, widest viewer support) or LABELMAP",
    )


def inference_settings(args: argparse.Namespace, threads: int | None) -> InferenceSettings:
    """The sliding-window settings the options above (and ``--max-memory``) say."""
    from mhub_cpu.segment.pipeline import InferenceSettings

    return InferenceSettings(
        precision=_precision(args.precision), precision_auto=args.precision == AUTO, overlap=args.overlap, blend=BlendMode(args.blend), threads=threads,
        strategy=WindowStrategy(args.strategy), skip_air=args.skip_air, max_memory_mb=args.max_memory_mb,
    )


def add_bodypart_model(parser: argparse.ArgumentParser, auto: bool = True) -> None:
    """``--model``, ``--precision`` and ``--calibration`` of body part regression (``bodypart-convert``:
    ``auto=False``, f32 by default)."""
    parser.add_argument("--model", default=None, help="bpreg model directory or zip URL (default: public model from Zenodo, cached)")
    parser.add_argument(
        "--precision", choices=[AUTO, *choices(BODYPART_PRECISIONS)] if auto else choices(BODYPART_PRECISIONS),
        default=AUTO if auto else "f32",
        help="OpenVINO inference precision: auto (default: bf16 where the CPU runs it natively, else int8 where it has "
        "INT8 kernels, each only where its scores on the calibration CT differ from f32's by at most 0.5, else f32); "
        "f32 (closest to bpreg); bf16 (CPUs with native bf16); int8 (NNCF-quantised, approximate)",
    )
    parser.add_argument("--calibration", nargs="+", default=None, metavar="CT",
                        help="int8: CT NIfTI files or DICOM folders to calibrate on (default: the engine's calibration CT, "
                        "configs/calibration/)")


def add_bodypart_options(parser: argparse.ArgumentParser) -> None:
    """``--fast`` and the crop between two landmarks."""
    parser.add_argument("--fast", action="store_true", help="score one slice every 2.5 mm and interpolate (approximate)")
    parser.add_argument("--crop-from", default=None, help="landmark where the cropped NIfTI starts, e.g. L5")
    parser.add_argument("--crop-to", default=None, help="landmark where the cropped NIfTI ends, e.g. Th1")


def bodypart_options(args: argparse.Namespace, series_uid: str | None = None) -> Options:
    """The body part regression options the options above say."""
    from mhub_cpu.bodypart.pipeline import Options

    return Options(
        precision=_precision(args.precision), precision_auto=args.precision == AUTO, fast=args.fast, crop_from=args.crop_from, crop_to=args.crop_to, series_uid=series_uid,
        calibration=[Path(p) for p in args.calibration] if args.calibration else None,
    )
