"""The bpreg network on OpenVINO: IR converted once per weights and cached, precision explicit.

The IR is converted from the torch module (``network.py``; torch is needed only then) and saved
in full fp32 under ``cache_dir()/openvino/bodypart-<weights hash>/``. The precision used for
inference is always passed to the compiler (``INFERENCE_PRECISION_HINT``), because the CPU
plugin otherwise picks bf16 on CPUs that support it.

``int8``: NNCF post-training quantisation of that IR (preset MIXED, fast bias correction),
calibrated on slices of real CT preprocessed by this engine's own ``prepare_slices``; the first
convolution (one input channel, intensities at 10 HU per INT8 step) and the head (``conv6``,
``fc7``) stay in f32: under 1 % of the operations, most of the quantisation error.
The INT8 IR is cached beside the fp32 one, keyed by the calibration files and settings, and
compiled with ``INFERENCE_PRECISION_HINT`` f32 for the parts that are not quantised. Compilation
and the check of what runs are shared with segmentation (``inference.runtime.compile_for_cpu``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import openvino as ov

from ..cache import cache_dir
from ..dicomio.nifti import load_nifti
from ..errors import ModelError
from ..inference.precision import require_compute
from ..inference.runtime import compile_for_cpu
from ..progress import ProgressCounter, log
from .modelfiles import ModelDir
from .preprocess import SIZE

PRECISIONS = ("f32", "bf16", "int8")
IR_NAME = "bodypart.xml"
CONVERTER_VERSION = "1"  # bump when network.py or the conversion changes
QUANTIZER_VERSION = "1"  # bump when the quantisation settings below change
CALIBRATION_STEP = 2  # every 2nd preprocessed slice of each calibration CT
BATCH = 32  # slices per infer call: 16-48 within 4 % on the 2-core CI machine, 1 is 30 % slower (int8)
SHARED_CT = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ct"


def ir_dir(model: ModelDir) -> Path:
    return cache_dir() / "openvino" / f"bodypart-{model.fingerprint()}-v{CONVERTER_VERSION}"


def _save_atomic(target: Path, make: Callable[[], ov.Model]) -> Path:
    """Save the IR ``make()`` returns as ``target/IR_NAME``, atomically (a concurrent writer may win)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        ov.save_model(make(), tmp / IR_NAME, compress_to_fp16=False)
        tmp.rename(target)
    except OSError:
        if not (target / IR_NAME).exists():  # not a concurrent conversion that won
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target / IR_NAME


def convert(model: ModelDir) -> Path:
    """Return the cached IR of ``model``, converting it first if needed (needs torch)."""
    target = ir_dir(model)
    if (target / IR_NAME).exists():
        return target / IR_NAME
    try:
        import torch

        from .network import load_network
    except ImportError as exc:
        raise ModelError(f"converting {model.weights} needs torch (pip install mhub-cpu[convert]): {exc}") from exc
    log(f"converting {model.weights} to OpenVINO IR (once)")
    try:
        net = load_network(str(model.weights))
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelError(f"{model.weights} is not a bpreg state_dict matching the VGG16 network: {exc}") from exc
    with torch.no_grad():
        ov_model = ov.convert_model(net, example_input=torch.zeros(1, 1, SIZE, SIZE), input=[(-1, 1, SIZE, SIZE)])
    return _save_atomic(target, lambda: ov_model)


def default_calibration() -> list[Path]:
    """The shared sample CTs beside the repository (NIfTI and the scanner DICOM series), where present."""
    candidates = [SHARED_CT / "abdomen_3mm.nii.gz", SHARED_CT / "upper_abdomen_scanner_dicom"]
    return [path for path in candidates if path.exists()]


def _fingerprint(paths: list[Path]) -> str:
    """Hash of the calibration inputs (file names and sizes) and the quantisation settings."""
    entries = []
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        entries += [f"{p.name}:{p.stat().st_size}" for p in files]
    key = "|".join(entries + [f"step={CALIBRATION_STEP}", "mixed", "fast_bias", f"v{QUANTIZER_VERSION}"])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def calibration_slices(paths: list[Path]) -> np.ndarray:
    """Every CALIBRATION_STEP-th network input slice of each CT (NIfTI file or DICOM folder)."""
    from ..dicomio import read_input
    from .preprocess import prepare_slices

    parts = []
    with tempfile.TemporaryDirectory(prefix="bodypart-calibration-") as work:
        for i, path in enumerate(paths):
            volume = read_input(Path(path), Path(work) / str(i), None)
            parts.append(prepare_slices(load_nifti(volume.nifti_path)).slices[::CALIBRATION_STEP])
    return np.concatenate(parts)


def quantize(model: ModelDir, calibration: list[Path] | None = None) -> Path:
    """Return the cached INT8 IR of ``model``, quantising it first if needed (NNCF).

    Raises:
        ModelError: no calibration CT given or found, or a calibration path is missing.
    """
    paths = [Path(p) for p in (calibration if calibration is not None else default_calibration())]
    if not paths:
        raise ModelError("INT8 needs calibration CT (--calibration CT.nii.gz|DICOM_DIR ...)")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ModelError(f"calibration CT not found: {', '.join(missing)}")
    fp32 = convert(model)
    target = fp32.parent / f"int8-{_fingerprint(paths)}"
    if (target / IR_NAME).exists():
        return target / IR_NAME
    try:
        import nncf
    except ImportError as exc:
        raise ModelError(f"INT8 quantisation needs NNCF (pip install nncf): {exc}") from exc
    slices = calibration_slices(paths)
    log(f"INT8 quantisation (once): NNCF calibration on {len(slices)} slices of {len(paths)} CT")
    ov_model = ov.Core().read_model(fp32)
    ops = [op for op in ov_model.get_ordered_ops() if op.get_type_name() in ("Convolution", "MatMul")]
    keep_f32 = [ops[0].get_friendly_name(), ops[-2].get_friendly_name(), ops[-1].get_friendly_name()]

    def make() -> ov.Model:
        return nncf.quantize(
            ov_model,
            nncf.Dataset(list(slices), lambda s: s[None, None]),
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(slices),
            fast_bias_correction=True,
            ignored_scope=nncf.IgnoredScope(names=keep_f32),
        )

    return _save_atomic(target, make)


class ScoreModel:
    """Compiled network: ``predict(slices)`` maps (N, 128, 128) float32 slices to N raw scores.

    ``int8`` uses the quantised IR (see :func:`quantize`; ``calibration`` overrides the default
    calibration CT) and f32 for its non-quantised operations. ``batch`` slices go through each
    infer call.
    """

    def __init__(
        self,
        model: ModelDir,
        precision: str = "f32",
        threads: int | None = None,
        batch: int = BATCH,
        calibration: list[Path] | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.precision = precision
        self.batch = batch
        compute = "f32" if precision == "int8" else precision
        require_compute(compute)  # before conversion or quantisation
        self.ir_path = quantize(model, calibration) if precision == "int8" else convert(model)
        self.compiled, self.ran = compile_for_cpu(self.ir_path, compute, threads or os.cpu_count() or 1, precision == "int8")
        self.request = self.compiled.create_infer_request()
        log(f"bpreg network runs {self.ran.summary()}")

    def predict(self, slices: np.ndarray) -> np.ndarray:
        scores = np.empty(len(slices), dtype=np.float64)
        progress = ProgressCounter("scoring slices", len(slices))
        for start in range(0, len(slices), self.batch):
            batch = np.ascontiguousarray(slices[start : start + self.batch, None], dtype=np.float32)
            result = self.request.infer({0: batch})
            scores[start : start + len(batch)] = np.asarray(result[0]).reshape(-1)
            progress.update(start + len(batch))
        return scores
