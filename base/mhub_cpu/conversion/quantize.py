"""INT8 post-training quantisation (NNCF) calibrated on windows of real CT.

The calibration windows are cut from CT volumes preprocessed exactly as at inference (the model's
own normalisation, crop and resampling), so the activation ranges NNCF measures are those the
network will see.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np

from ..errors import ModelError
from ..inference.preprocess import prepare, to_canonical
from ..inference.sliding_window import padding_for, plan_sparse
from ..progress import log

#: Upper bound on calibration windows (each costs one full-resolution forward pass).
MAX_CALIBRATION_WINDOWS = 6


def default_calibration_images() -> list[Path]:
    """The shared sample CT next to the repository, when present (tests, benchmarks)."""
    candidate = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ct" / "abdomen_3mm.nii.gz"
    return [candidate] if candidate.exists() else []


def calibration_windows(images: list[Path], config: dict[str, Any], limit: int = MAX_CALIBRATION_WINDOWS) -> list[np.ndarray]:
    """Preprocessed windows of the network's static input size from each image, round-robin."""
    roi = tuple(int(v) for v in config["roi_size"])
    per_image = []
    for path in images:
        prepared = prepare(to_canonical(nib.load(path)), config)
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
    quantizer_id = hashlib.sha256(f"{fingerprint}|{MAX_CALIBRATION_WINDOWS}|mixed".encode()).hexdigest()[:12]

    def quantize(ov_model: Any, config: dict[str, Any]) -> Any:
        import nncf

        windows = calibration_windows(images, config)
        log(f"INT8 calibration on {len(windows)} windows of {len(images)} CT image(s) (NNCF, this takes a while)")
        dataset = nncf.Dataset(windows, lambda window: window[None, None].astype(np.float32))
        return nncf.quantize(
            ov_model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=len(windows),
            fast_bias_correction=True,
        )

    return quantize, quantizer_id
