"""INT8 post-training quantisation (NNCF) calibrated on windows of real CT.

The calibration windows are cut from CT volumes preprocessed exactly as at inference (the model's
own normalisation, crop and resampling), so the activation ranges NNCF measures are those the
network will see.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..dicomio.nifti import load_nifti
from ..errors import ModelError
from ..inference.preprocess import prepare, to_canonical
from ..inference.sliding_window import padding_for, plan_sparse
from ..progress import log

#: Upper bound on calibration windows.
MAX_CALIBRATION_WINDOWS = 6
#: Voxels per calibration window. The network is fully convolutional, so activation ranges can be
#: measured on windows smaller than the model's own; NNCF keeps every layer's activations of every
#: sample, which on full 224×224×144 windows needs over 13 GB.
CALIBRATION_WINDOW_VOXELS = 1_200_000


def default_calibration_images() -> list[Path]:
    """The shared sample CT next to the repository, when present (tests, benchmarks)."""
    candidate = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ct" / "abdomen_3mm.nii.gz"
    return [candidate] if candidate.exists() else []


def calibration_window(config: dict[str, Any]) -> tuple[int, int, int]:
    """The model's window scaled down to about :data:`CALIBRATION_WINDOW_VOXELS`, keeping its
    proportions and the network's size multiple."""
    roi = np.array([int(v) for v in config["roi_size"]], dtype=float)
    divisor = int(config.get("size_divisor", 16))
    scale = min(1.0, (CALIBRATION_WINDOW_VOXELS / roi.prod()) ** (1 / 3))
    return tuple(max(divisor, int(round(v * scale / divisor)) * divisor) for v in roi)  # type: ignore[return-value]


def calibration_windows(images: list[Path], config: dict[str, Any], limit: int = MAX_CALIBRATION_WINDOWS) -> list[np.ndarray]:
    """Preprocessed windows of :func:`calibration_window` size from each image, round-robin."""
    roi = calibration_window(config)
    per_image = []
    for path in images:
        prepared = prepare(to_canonical(load_nifti(path)), config)
        volume = np.pad(prepared.image, padding_for(prepared.image.shape, roi))
        plan = plan_sparse(volume.shape, roi, 0.0, 1)
        per_image.append([volume[x : x + roi[0], y : y + roi[1], z : z + roi[2]].copy() for x, y, z in plan.starts])
    windows: list[np.ndarray] = []
    while len(windows) < limit and any(per_image):
        for queue in per_image:
            if queue and len(windows) < limit:
                windows.append(queue.pop(len(queue) // 2))
    if not windows:
        raise ModelError("no calibration data for INT8: give CT images with --calibration")
    return windows


def make_quantizer(images: list[Path]) -> tuple[Callable[[Any, dict[str, Any]], Any], str]:
    """Return ``(quantizer, quantizer_id)`` for :func:`mhub_cpu.conversion.convert_bundle`.

    The id hashes the calibration files' names and sizes and the settings, so the cached INT8 IR
    changes when the calibration changes.
    """
    if not images:
        raise ModelError("INT8 needs calibration CT images (--calibration FILE.nii.gz ...)")
    for path in images:
        if not Path(path).exists():
            raise ModelError(f"calibration image not found: {path}")
    fingerprint = "|".join(f"{Path(p).name}:{Path(p).stat().st_size}" for p in images)
    settings = f"{MAX_CALIBRATION_WINDOWS}|{CALIBRATION_WINDOW_VOXELS}|mixed"
    quantizer_id = hashlib.sha256(f"{fingerprint}|{settings}".encode()).hexdigest()[:12]

    def quantize(ov_model: Any, config: dict[str, Any]) -> Any:
        import nncf

        windows = calibration_windows(images, config)
        static_shape = [int(d) for d in ov_model.input(0).shape]
        ov_model.reshape([*static_shape[:2], *windows[0].shape])
        log(f"INT8 calibration on {len(windows)} windows {windows[0].shape} of {len(images)} CT image(s) (NNCF)")
        dataset = nncf.Dataset(windows, lambda window: window[None, None].astype(np.float32))
        quantized = nncf.quantize(
            ov_model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=len(windows),
            fast_bias_correction=True,
        )
        quantized.reshape(static_shape)
        return quantized

    return quantize, quantizer_id
