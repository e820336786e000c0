"""The network a segmentation runs: a model bundle as cached OpenVINO IR in the run's precision."""

from __future__ import annotations

from pathlib import Path

from mhub_cpu.auto3dseg.bundle import ModelBundle, load_bundle
from mhub_cpu.convert.auto3dseg import ConvertedModel, convert_bundle
from mhub_cpu.core.resources import calibration_images, demo_model_path
from mhub_cpu.runtime.precision import IrFormat, Precision
from mhub_cpu.segment.calibration import make_quantizer


def resolve_bundle(model: str) -> ModelBundle:
    """``demo`` (the embedded demo model), a catalogue id or name, or a model zip/folder."""
    return load_bundle(str(demo_model_path()) if model == "demo" else model)


def prepare_network(
    bundle: ModelBundle, precision: Precision, calibration: tuple[Path, ...] = (), trust_model: bool = False,
) -> ConvertedModel:
    """The cached IR for ``precision`` (converted, and for int8 quantised on ``calibration`` or the
    engine's calibration CT, on first use)."""
    if precision.ir is IrFormat.INT8:
        quantizer, quantizer_id = make_quantizer(list(calibration) or calibration_images())
        return convert_bundle(bundle, precision.ir, quantizer, quantizer_id, trust_model=trust_model)
    return convert_bundle(bundle, precision.ir, trust_model=trust_model)
