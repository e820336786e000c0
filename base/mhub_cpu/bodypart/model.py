"""The bpreg network on OpenVINO: IR converted once per weights and cached, precision explicit.

The IR is converted from the torch module (``network.py``; torch is needed only then) and saved
in full fp32 under ``cache_dir()/openvino/bodypart-<weights hash>/``. The precision used for
inference is always passed to the compiler (``INFERENCE_PRECISION_HINT``), because the CPU
plugin otherwise picks bf16 on CPUs that support it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import openvino as ov

from ..cache import cache_dir
from ..errors import ModelError
from ..progress import ProgressCounter, log
from .modelfiles import ModelDir
from .preprocess import SIZE

PRECISIONS = ("f32", "bf16")
IR_NAME = "bodypart.xml"
CONVERTER_VERSION = "1"  # bump when network.py or the conversion changes
BATCH = 16


def ir_dir(model: ModelDir) -> Path:
    return cache_dir() / "openvino" / f"bodypart-{model.fingerprint()}-v{CONVERTER_VERSION}"


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
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        ov.save_model(ov_model, tmp / IR_NAME, compress_to_fp16=False)
        tmp.rename(target)
    except OSError:
        if not (target / IR_NAME).exists():  # not a concurrent conversion that won
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target / IR_NAME


class ScoreModel:
    """Compiled network: ``predict(slices)`` maps (N, 128, 128) float32 slices to N raw scores."""

    def __init__(self, model: ModelDir, precision: str = "f32", threads: int | None = None) -> None:
        if precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.precision = precision
        config = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads or os.cpu_count() or 1),
        }
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(convert(model)), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def predict(self, slices: np.ndarray) -> np.ndarray:
        scores = np.empty(len(slices), dtype=np.float64)
        progress = ProgressCounter("scoring slices", len(slices))
        for start in range(0, len(slices), BATCH):
            batch = np.ascontiguousarray(slices[start : start + BATCH, None], dtype=np.float32)
            result = self.request.infer({0: batch})
            scores[start : start + len(batch)] = np.asarray(result[0]).reshape(-1)
            progress.update(start + len(batch))
        return scores
