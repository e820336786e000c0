"""``mhub-cpu verify``: does the converted model compute what the checkpoint computes?

Run after conversion (image builds do), on a CT the engine ships (the calibration CT): for each
precision this CPU can compute in (others are reported as not verified), the OpenVINO logits of one window against PyTorch's, and the labels of our whole
pipeline against the MONAI reference pipeline (the Slicer script's). Below the agreement stated in
:data:`MIN_AGREEMENT` the check fails, so a conversion that went wrong stops the build that made it.
This is how real weights are checked the first time anyone converts them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mhub_cpu.auto3dseg.bundle import ModelBundle
from mhub_cpu.convert.reference import reference_logits, reference_segment
from mhub_cpu.core.errors import ProcessingError
from mhub_cpu.core.progress import StageTimer, log
from mhub_cpu.core.resources import calibration_images
from mhub_cpu.dicomio.nifti import load_nifti
from mhub_cpu.runtime.network import Network
from mhub_cpu.runtime.precision import CpuCapabilities, Precision
from mhub_cpu.segment.model import prepare_network
from mhub_cpu.segment.pipeline import InferenceSettings, segment_image
from mhub_cpu.segment.preprocess import model_orientation, prepare
from mhub_cpu.segment.splitter import padding_for

#: Least agreement per precision: (argmax agreement of one window's logits, mean Dice of the labels
#: against the reference, lowest Dice of a label the reference finds in at least MIN_VOXELS voxels).
MIN_AGREEMENT: dict[Precision, tuple[float, float, float]] = {
    Precision.F32: (0.999, 0.99, 0.95),
    Precision.FP16: (0.99, 0.98, 0.90),
    Precision.BF16: (0.98, 0.97, 0.85),
    Precision.INT8: (0.95, 0.90, 0.70),
}
#: Labels smaller than this (voxels, in the reference) are reported but not held to the minimum.
MIN_VOXELS = 500


def _center_window(config: dict, ct: Path) -> np.ndarray:
    """The model-window-sized block at the centre of the preprocessed CT."""
    prepared = prepare(model_orientation(load_nifti(ct), config), config).image
    roi = tuple(int(v) for v in config["roi_size"])
    volume = np.pad(prepared, padding_for(prepared.shape, roi))
    start = [(n - r) // 2 for n, r in zip(volume.shape, roi)]
    return volume[tuple(slice(s, s + r) for s, r in zip(start, roi))]


def _dice(ours: np.ndarray, reference: np.ndarray) -> dict[int, tuple[float, int]]:
    scores = {}
    for value in np.unique(reference)[1:]:
        a, b = ours == value, reference == value
        scores[int(value)] = (2.0 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum()), int(b.sum()))
    return scores


def verify_model(bundle: ModelBundle, precisions: list[Precision], ct: Path | None = None) -> dict:
    """Agreement of each precision's IR with the checkpoint; raises when one falls below :data:`MIN_AGREEMENT`.

    Raises:
        ProcessingError: a precision agrees less than stated (all figures are in the message).
    """
    ct = ct or calibration_images()[0]
    image = load_nifti(ct)
    log(f"verify {bundle.model_id}: MONAI + PyTorch reference on {ct.name}")
    reference = np.asarray(reference_segment(ct, bundle).dataobj)
    results: dict = {"model": bundle.model_id, "checkpoint_sha256": bundle.checkpoint_sha256, "ct": ct.name, "precisions": {}}
    failures = []
    capabilities = CpuCapabilities.query()
    window: np.ndarray | None = None
    expected: np.ndarray | None = None
    for precision in precisions:
        if not capabilities.supports(precision.compute):  # e.g. bf16 where the building CPU has none
            results["precisions"][precision.value] = {"ok": None, "not_verified": f"this CPU cannot compute in {precision.compute}"}
            log(f"verify {bundle.model_id} {precision}: not verified, this CPU cannot compute in {precision.compute}")
            continue
        converted = prepare_network(bundle, precision)
        if expected is None:  # one window and PyTorch's logits for it serve every precision of the model
            window = _center_window(converted.config, ct)
            expected = reference_logits(bundle, window)
        assert window is not None
        ours = Network(converted.xml_path, precision, input_shape=(1, 1, *window.shape))(window[None, None])[0]
        logits_agree = float((ours.argmax(0) == expected.argmax(0)).mean())
        labels = np.asarray(segment_image(image, converted, InferenceSettings(precision=precision), StageTimer()).labels.dataobj)
        dice = _dice(labels, reference)
        held = [score for score, voxels in dice.values() if voxels >= MIN_VOXELS]
        mean = float(np.mean([score for score, _ in dice.values()])) if dice else 1.0
        lowest = float(min(held)) if held else 1.0
        need = MIN_AGREEMENT[precision]
        ok = logits_agree >= need[0] and mean >= need[1] and lowest >= need[2]
        results["precisions"][precision.value] = {
            "window_argmax_agreement": round(logits_agree, 5),
            "window_max_abs_logit_diff": round(float(np.abs(ours - expected).max()), 5),
            "dice_mean": round(mean, 4), "dice_min": round(lowest, 4),
            "dice_per_label": {value: round(score, 4) for value, (score, _) in dice.items()},
            "required": {"window_argmax_agreement": need[0], "dice_mean": need[1], "dice_min": need[2]},
            "ok": ok,
        }
        log(f"verify {bundle.model_id} {precision}: window argmax {logits_agree:.4f}, Dice mean {mean:.4f} min {lowest:.4f}"
            f" (need {need[0]}, {need[1]}, {need[2]}): {'ok' if ok else 'FAILED'}")
        if not ok:
            failures.append(f"{precision}: window argmax {logits_agree:.4f}, Dice mean {mean:.4f}, min {lowest:.4f} "
                            f"(need {need[0]}, {need[1]}, {need[2]})")
    if failures:
        raise ProcessingError(f"the converted {bundle.model_id} does not compute what its checkpoint computes: " + "; ".join(failures))
    return results
