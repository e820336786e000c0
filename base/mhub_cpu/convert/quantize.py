"""INT8 post-training quantisation of an OpenVINO model with NNCF, on calibration samples given by the job.

The samples must be network inputs preprocessed exactly as at inference, so that the activation
ranges NNCF measures are those the network will see; each job cuts them from real CT with its own
preprocessing (``segment.calibration``, ``bodypart.model``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mhub_cpu.core.errors import ModelError
from mhub_cpu.core.progress import log

#: NNCF settings of every INT8 IR (part of the cache keys).
SETTINGS = "preset=mixed|fast_bias_correction"


def quantize_int8(ov_model: Any, samples: list[np.ndarray], keep_f32: tuple[str, ...] = ()) -> Any:
    """The INT8 model NNCF makes of ``ov_model`` calibrated on ``samples`` (each one input tensor).

    Preset MIXED (symmetric weights, asymmetric activations), fast bias correction, every sample used.

    Args:
        keep_f32: Friendly names of operations left in f32 (NNCF ``IgnoredScope``).

    Raises:
        ModelError: no samples, or NNCF is not installed.
    """
    if not samples:
        raise ModelError("no calibration data for INT8: give CT images with --calibration")
    try:
        import nncf
    except ImportError as exc:
        raise ModelError(f"INT8 quantisation needs NNCF (pip install mhub-cpu[convert]): {exc}") from exc
    log(f"INT8 quantisation (once): NNCF calibration on {len(samples)} samples of shape {samples[0].shape}")
    return nncf.quantize(
        ov_model,
        nncf.Dataset(samples, lambda sample: np.asarray(sample, dtype=np.float32)),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(samples),
        fast_bias_correction=True,
        ignored_scope=nncf.IgnoredScope(names=list(keep_f32)) if keep_f32 else None,
    )
