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
from mhub_cpu.convert.auto3dseg import ConvertedModel, ir_folder
from mhub_cpu.convert.ir_cache import agreement_record_path, read_record, write_record
from mhub_cpu.convert.reference import reference_logits, reference_segment
from mhub_cpu.core.errors import ProcessingError
from mhub_cpu.core.progress import StageTimer, log
from mhub_cpu.core.resources import calibration_images
from mhub_cpu.dicomio.nifti import load_nifti
from mhub_cpu.runtime.network import Network
from mhub_cpu.runtime.precision import Agreement, CpuCapabilities, IrFormat, Precision
from mhub_cpu.segment.calibration import make_quantizer
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
#: What ``--precision auto`` requires of a precision's labels against f32's (mean Dice, lowest Dice of
#: a label present): the Dice verify requires of f32 itself against the reference, so that auto never
#: picks a precision less faithful than f32 has to be.
AUTO_DICE: tuple[float, float] = MIN_AGREEMENT[Precision.F32][1:]
#: Bump when what an agreement record measures changes (older records are measured again).
AGREEMENT_VERSION = 2


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
        if precision is not Precision.F32:  # recorded beside the IR for --precision auto
            results["precisions"][precision.value]["agreement_with_f32"] = agreement_with_f32(bundle, precision, ct=ct)
        if not ok:
            failures.append(f"{precision}: window argmax {logits_agree:.4f}, Dice mean {mean:.4f}, min {lowest:.4f} "
                            f"(need {need[0]}, {need[1]}, {need[2]})")
    if failures:
        raise ProcessingError(f"the converted {bundle.model_id} does not compute what its checkpoint computes: " + "; ".join(failures))
    return results


def agreement_with_f32(
    bundle: ModelBundle, precision: Precision, calibration: tuple[Path, ...] = (), trust_model: bool = False,
    ct: Path | None = None,
) -> dict:
    """The labels of ``precision`` against f32's on one window (the centre of the calibration CT), as
    recorded beside ``precision``'s IR; measured and recorded on first use, once per model, precision
    and CPU (``mhub-cpu verify`` records it too, so an image that verified at build never measures).

    Cheap on purpose (two inferences of one window, no PyTorch): ``--precision auto`` asks it before a run.
    """
    ct = ct or calibration_images()[0]
    converted = prepare_network(bundle, precision, calibration, trust_model)
    reference = prepare_network(bundle, Precision.F32, trust_model=trust_model)
    record_path, key = agreement_record(converted, reference, precision, ct)
    if (record := read_record(record_path, key)) is not None:
        return record
    window = _center_window(reference.config, ct)
    shape = (1, 1, *window.shape)
    expected = Network(reference.xml_path, Precision.F32, input_shape=shape)(window[None, None])[0].argmax(0)
    ours = Network(converted.xml_path, precision, input_shape=shape)(window[None, None])[0].argmax(0)
    dice = _dice(ours, expected)
    # Structures present: at least MIN_VOXELS in f32's labels (a few voxels at the window's edge say little).
    held = [score for score, voxels in dice.values() if voxels >= MIN_VOXELS] or [score for score, _ in dice.values()]
    mean = float(np.mean(held)) if held else 1.0
    lowest = float(min(held)) if held else 1.0
    record = {
        **key, "precision": precision.value, "window": list(window.shape),
        "argmax_agreement": round(float((ours == expected).mean()), 5),
        "dice_mean": round(mean, 4), "dice_min": round(lowest, 4), "labels_present": len(dice),
        "dice_per_label": {str(value): round(score, 4) for value, (score, _) in dice.items()},
        "voxels_per_label": {str(value): voxels for value, (_, voxels) in dice.items()},
        "required": {"dice_mean": AUTO_DICE[0], "dice_min": AUTO_DICE[1], "min_voxels": MIN_VOXELS},
        "ok": mean >= AUTO_DICE[0] and lowest >= AUTO_DICE[1],
    }
    recorded = write_record(record_path, record)
    log(f"agreement of {bundle.model_id} {precision} with f32 on {ct.name}: Dice mean {mean:.4f}, min {lowest:.4f}"
        f" ({'recorded in ' + str(record_path) if recorded else 'not recorded: the cache is read-only'})")
    return record


def agreement_record(converted: ConvertedModel, reference: ConvertedModel, precision: Precision, ct: Path) -> tuple[Path, dict]:
    """Where ``precision``'s agreement with f32 is recorded (beside its IR), and what a record must
    match to be used: what it measures, the CT, the f32 IR it was measured against, and the CPU."""
    return _record_key(converted.xml_path.parent, reference.xml_path.parent, precision, ct)


def _record_key(ir: Path, f32_ir: Path, precision: Precision, ct: Path) -> tuple[Path, dict]:
    key = {"version": AGREEMENT_VERSION, "ct": Path(ct).name, "f32_ir": f32_ir.name, "cpu": CpuCapabilities.query().to_json()}
    return agreement_record_path(ir, precision.value), key


def recorded_agreement(bundle: ModelBundle, precision: Precision, calibration: tuple[Path, ...] = ()) -> dict | None:
    """``precision``'s agreement with f32 as ``mhub-cpu verify`` recorded it on this CPU, converting
    nothing (``None``: no record, or one of another CPU, CT or f32 IR). ``--precision auto`` takes int8
    only from such a record: measuring it would quantise the network first, minutes on a first run."""
    ct = calibration_images()[0]
    quantizer_id = make_quantizer(list(calibration) or calibration_images())[1] if precision.ir is IrFormat.INT8 else ""
    path, key = _record_key(ir_folder(bundle, precision.ir, quantizer_id), ir_folder(bundle), precision, ct)
    return read_record(path, key)


def as_agreement(record: dict) -> Agreement:
    """A recorded agreement in the words of ``--precision auto``'s reason."""
    sign = "≥" if record["ok"] else "<"
    need = record["required"]
    return Agreement(
        ok=bool(record["ok"]),
        figures=f"Dice mean {record['dice_mean']:.3f}, min {record['dice_min']:.3f} {sign} {need['dice_mean']}/{need['dice_min']}",
    )
