"""INT8 calibration of a segmentation model: windows of real CT, preprocessed as at inference.

The calibration windows are cut from CT volumes preprocessed exactly as at inference (the model's
own normalisation, crop and resampling), so the activation ranges NNCF measures are those the
network will see. The default CT is the engine's own (``configs/calibration/``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from mhub_cpu.convert.auto3dseg import Quantizer
from mhub_cpu.convert.quantize import quantize_int8
from mhub_cpu.core.errors import ModelError
from mhub_cpu.core.progress import log
from mhub_cpu.dicomio.nifti import load_nifti
from mhub_cpu.segment.preprocess import model_orientation, prepare
from mhub_cpu.segment.splitter import padding_for, plan_sparse

#: Upper bound on calibration windows.
MAX_CALIBRATION_WINDOWS = 6
#: Voxels per calibration window. The network is fully convolutional, so activation ranges can be
#: measured on windows smaller than the model's own; NNCF keeps every layer's activations of every
#: sample, which on full 224×224×144 windows needs over 13 GB.
CALIBRATION_WINDOW_VOXELS = 1_200_000


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
        prepared = prepare(model_orientation(load_nifti(path), config), config)
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


def make_quantizer(images: list[Path]) -> tuple[Quantizer, str]:
    """Return ``(quantizer, quantizer_id)`` for :func:`mhub_cpu.convert.auto3dseg.convert_bundle`.

    The id hashes the calibration files' names and sizes and the settings, so the cached INT8 IR
    changes when the calibration changes.

    Raises:
        ModelError: no calibration image, or one that does not exist.
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
        windows = calibration_windows(images, config)
        static_shape = [int(d) for d in ov_model.input(0).shape]
        ov_model.reshape([*static_shape[:2], *windows[0].shape])
        log(f"INT8 calibration on {len(windows)} windows {windows[0].shape} of {len(images)} CT image(s)")
        quantized = quantize_int8(ov_model, [window[None, None] for window in windows])
        quantized.reshape(static_shape)
        return quantized

    return quantize, quantizer_id
