"""The bpreg network on OpenVINO: converted once per weights, precision explicit and checked.

The fp32 IR and the INT8 IR come from the IR cache (:mod:`mhub_cpu.convert.bodypart`). INT8 is
calibrated on every :data:`CALIBRATION_STEP`-th slice of real CT preprocessed by this job's own
:func:`~mhub_cpu.bodypart.preprocess.prepare_slices` (default: the engine's calibration CT), and
runs f32 for the operations that are not quantised. Compilation, and the check of what runs,
are shared with segmentation (:mod:`mhub_cpu.runtime.network`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from mhub_cpu.bodypart.modelfiles import ModelDir
from mhub_cpu.bodypart.preprocess import SIZE, prepare_slices
from mhub_cpu.convert.bodypart import CONVERTER_VERSION, convert_bodypart, quantize_bodypart
from mhub_cpu.convert.ir_cache import file_fingerprint, ir_root
from mhub_cpu.convert.quantize import SETTINGS as QUANTIZE_SETTINGS
from mhub_cpu.core.errors import ModelError
from mhub_cpu.core.progress import ProgressCounter, log
from mhub_cpu.core.resources import calibration_images
from mhub_cpu.dicomio import read_input
from mhub_cpu.dicomio.nifti import load_nifti
from mhub_cpu.runtime.network import Network
from mhub_cpu.runtime.precision import IrFormat, Precision, require_compute

#: The precisions body part regression offers (fp16 weights would save nothing on a 60 MB network).
PRECISIONS = (Precision.F32, Precision.BF16, Precision.INT8)
#: Bump when the calibration below changes.
QUANTIZER_VERSION = "2"
CALIBRATION_STEP = 2  # every 2nd preprocessed slice of each calibration CT
BATCH = 32  # slices per infer call: 16-48 within 4 % on the 2-core CI machine, 1 is 30 % slower (int8)


def calibration_slices(paths: list[Path]) -> list[np.ndarray]:
    """Every CALIBRATION_STEP-th network input slice, (1, 1, 128, 128), of each CT (NIfTI or DICOM folder)."""
    parts = []
    with tempfile.TemporaryDirectory(prefix="bodypart-calibration-") as work:
        for i, path in enumerate(paths):
            volume = read_input(Path(path), Path(work) / str(i), None)
            parts.append(prepare_slices(load_nifti(volume.nifti_path)).slices[::CALIBRATION_STEP])
    return [s[None, None] for s in np.concatenate(parts)]


def ir_path(model: ModelDir, precision: Precision, calibration: list[Path] | None = None) -> Path:
    """The cached IR for ``precision`` (converted, and for INT8 quantised, on first use).

    Raises:
        ModelError: INT8 without calibration CT, or a calibration path that does not exist.
    """
    fp32 = convert_bodypart(model.weights, model.fingerprint())
    if precision.ir is not IrFormat.INT8:
        return fp32
    name, paths = _int8_name(model, calibration)
    return quantize_bodypart(fp32, name, lambda: calibration_slices(paths))


def int8_folder(model: ModelDir, calibration: list[Path] | None = None) -> Path:
    """The cache folder of the INT8 IR (which may not exist yet), found without converting anything."""
    return ir_root() / _int8_name(model, calibration)[0]


def _int8_name(model: ModelDir, calibration: list[Path] | None) -> tuple[str, list[Path]]:
    paths = [Path(p) for p in (calibration if calibration is not None else calibration_images())]
    if not paths:
        raise ModelError("INT8 needs calibration CT (--calibration CT.nii.gz|DICOM_DIR ...)")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ModelError(f"calibration CT not found: {', '.join(missing)}")
    key = file_fingerprint(paths, f"step={CALIBRATION_STEP}", QUANTIZE_SETTINGS, f"v{QUANTIZER_VERSION}")
    return f"bodypart-{model.fingerprint()}-v{CONVERTER_VERSION}-int8-{key}", paths


class ScoreModel:
    """Compiled network: ``predict(slices)`` maps (N, 128, 128) float32 slices to N raw scores.

    ``int8`` uses the quantised IR (``calibration`` overrides the default calibration CT) and f32
    for its non-quantised operations. ``batch`` slices go through each infer call.
    """

    def __init__(
        self,
        model: ModelDir,
        precision: Precision = Precision.F32,
        threads: int | None = None,
        batch: int = BATCH,
        calibration: list[Path] | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.precision = precision
        self.batch = batch
        require_compute(precision.compute)  # before conversion or quantisation
        self.ir_path = ir_path(model, precision, calibration)
        self.network = Network(self.ir_path, precision, threads or os.cpu_count() or 1)
        self.ran = self.network.ran
        log(f"bpreg network runs {self.ran.summary()}")

    def predict(self, slices: np.ndarray) -> np.ndarray:
        scores = np.empty(len(slices), dtype=np.float64)
        progress = ProgressCounter("scoring slices", len(slices))
        for start in range(0, len(slices), self.batch):
            batch = slices[start : start + self.batch, None]
            scores[start : start + len(batch)] = self.network(batch).reshape(-1)
            progress.update(start + len(batch))
        return scores


__all__ = ["BATCH", "PRECISIONS", "SIZE", "ScoreModel", "calibration_slices", "ir_path"]
