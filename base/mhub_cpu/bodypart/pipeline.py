"""One body-part-regression run: input volume -> scores -> bpreg.json, qa.json, SR, crop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from mhub_cpu.bodypart.model import PRECISIONS, ScoreModel, calibration_slices, int8_folder, ir_path
from mhub_cpu.bodypart.modelfiles import ModelDir
from mhub_cpu.bodypart.outputs import bpreg_result, crop_range, write_crop
from mhub_cpu.bodypart.postprocess import ScoreCurve, score_curve
from mhub_cpu.bodypart.preprocess import orientation_of, prepare_slices
from mhub_cpu.bodypart.qa import qa_verdicts
from mhub_cpu.convert.ir_cache import agreement_record_path, read_record, write_record
from mhub_cpu.core.errors import InputError, MhubCpuError, ModelError
from mhub_cpu.core.files import remove_results, staged_output, write_json
from mhub_cpu.core.progress import StageTimer, log
from mhub_cpu.core.resources import calibration_images
from mhub_cpu.dicomio import read_input
from mhub_cpu.runtime.precision import Agreement, CpuCapabilities, IrFormat, Precision, choose_precision

OUTPUT_FILES = ("bpreg.json", "qa.json", "bpr_landmarks_sr.dcm", "bpr_regions_sr.dcm", "cropped.nii.gz")
#: What ``--precision auto`` requires of a precision: its raw scores on the calibration CT differ from
#: f32's by at most this (score points; the benchmark's target for a faster mode against bpreg).
AUTO_MAX_SCORE_DIFF = 0.5
#: Bump when what an agreement record measures changes (older records are measured again).
AGREEMENT_VERSION = 1
MIN_SLICES = 2
FAST_STEP_MM = 2.5  # scored-slice spacing of the fast mode


@dataclass
class Options:
    """How to score a CT (the ``bodypart`` command's options)."""

    precision: Precision = Precision.F32
    #: ``--precision auto``: ``precision`` is a placeholder until :func:`resolve_precision` chose it and said why.
    precision_auto: bool = False
    precision_reason: str = ""
    fast: bool = False
    crop_from: str | None = None
    crop_to: str | None = None
    series_uid: str | None = None
    calibration: list[Path] | None = None  # int8 calibration CT (default: the engine's calibration CT)
    threads: int | None = None  # OpenVINO threads (default: all cores; a batch gives each worker its share)


@dataclass
class Result:
    curve: ScoreCurve
    bpreg: dict
    qa: dict
    timer: StageTimer = field(default_factory=StageTimer)


def scored_indices(n_slices: int, z_spacing: float, fast: bool) -> np.ndarray:
    """All slices, or in fast mode every k-th slice (k = FAST_STEP_MM / spacing) plus the last."""
    step = max(1, int(round(FAST_STEP_MM / z_spacing))) if fast else 1
    indices = np.arange(0, n_slices, step)
    return indices if indices[-1] == n_slices - 1 else np.append(indices, n_slices - 1)


def score_volume(image: nib.Nifti1Image, model: ModelDir, scorer: ScoreModel, options: Options, timer: StageTimer) -> ScoreCurve:
    """Raw scores for every slice (interpolated between scored slices in fast mode), post-processed.

    Raises:
        InputError: fewer than two slices, or too small in-plane (CT intensities are checked on reading).
    """
    orient = orientation_of(image)
    if orient.n_slices < MIN_SLICES:
        raise InputError(
            f"the volume has {orient.n_slices} slice; body part regression needs at least {MIN_SLICES} "
            "slices to estimate slope, slice order and z-spacing"
        )
    with timer.stage("preprocess"):
        indices = scored_indices(orient.n_slices, orient.spacing[2], options.fast)
        prepared = prepare_slices(image, indices)
    with timer.stage(f"inference ({len(indices)} slices, {scorer.precision})"):
        raw = scorer.predict(prepared.slices)
    if len(indices) < orient.n_slices:
        raw = np.interp(np.arange(orient.n_slices), indices, raw)
    return score_curve(raw, orient.spacing[2], model.settings)


def score_agreement(model: ModelDir, precision: Precision, calibration: list[Path] | None = None) -> dict:
    """The raw scores of ``precision`` against f32's on the calibration CT's slices (every
    :data:`~mhub_cpu.bodypart.model.CALIBRATION_STEP`-th), as recorded beside ``precision``'s IR;
    measured and recorded on first use, once per model, precision and CPU."""
    ct = calibration_images()
    if (record := recorded_agreement(model, precision, calibration)) is not None:
        return record
    record_path, key = agreement_record(model, precision, calibration)
    slices = np.concatenate(calibration_slices(ct))[:, 0]
    expected = ScoreModel(model, Precision.F32).predict(slices)
    ours = ScoreModel(model, precision, calibration=calibration).predict(slices)
    diff = float(np.abs(ours - expected).max())
    record = {**key, "precision": precision.value, "slices": len(slices), "max_abs_score_diff": round(diff, 4),
              "required": {"max_abs_score_diff": AUTO_MAX_SCORE_DIFF}, "ok": diff <= AUTO_MAX_SCORE_DIFF}
    recorded = write_record(record_path, record)
    log(f"agreement of bpreg {precision} with f32 on {len(slices)} calibration slices: max score diff {diff:.3f}"
        f" ({'recorded in ' + str(record_path) if recorded else 'not recorded: the cache is read-only'})")
    return record


def agreement_record(model: ModelDir, precision: Precision, calibration: list[Path] | None = None) -> tuple[Path, dict]:
    """Where ``precision``'s agreement with f32 is recorded (beside its IR), and what a record must
    match to be used: what it measures, the calibration CT, the f32 IR and the CPU."""
    key = {"version": AGREEMENT_VERSION, "ct": [p.name for p in calibration_images()],
           "f32_ir": ir_path(model, Precision.F32).parent.name, "cpu": CpuCapabilities.query().to_json()}
    folder = int8_folder(model, calibration) if precision.ir is IrFormat.INT8 else ir_path(model, precision).parent
    return agreement_record_path(folder, precision.value), key


def recorded_agreement(model: ModelDir, precision: Precision, calibration: list[Path] | None = None) -> dict | None:
    """``precision``'s recorded agreement on this CPU, measuring and quantising nothing (``None``: no record)."""
    record_path, key = agreement_record(model, precision, calibration)
    return read_record(record_path, key)


def resolve_precision(model: ModelDir, options: Options) -> Options:
    """``options`` with ``--precision auto`` replaced by the precision it picks for this CPU and model:
    bf16 where the CPU runs it natively, else int8 where it has VNNI, each only where its
    :func:`score_agreement` holds (≤ :data:`AUTO_MAX_SCORE_DIFF`; bf16 measured on first use, int8
    only as ``bodypart-convert`` recorded it), else f32. Logs the choice and why."""
    if not options.precision_auto or options.precision_reason:
        return options

    def agreement(precision: Precision) -> Agreement:
        if precision.ir is not IrFormat.INT8:  # bf16 runs the f32 IR: scoring the calibration slices twice
            record = score_agreement(model, precision, options.calibration)
        elif (found := recorded_agreement(model, precision, options.calibration)) is not None:
            record = found
        else:  # measuring would quantise the network first
            raise ModelError("no agreement with f32 recorded on this CPU (mhub-cpu bodypart-convert --precision int8 "
                             "measures and records it)")
        sign = "≤" if record["ok"] else ">"
        return Agreement(bool(record["ok"]), f"max score diff {record['max_abs_score_diff']:.3f} {sign} {AUTO_MAX_SCORE_DIFF}")

    choice = choose_precision(PRECISIONS, agreement)
    log(choice.log_line())
    return replace(options, precision=choice.precision, precision_reason=choice.reason)


def run(input_path: Path, output_dir: Path, model: ModelDir, options: Options, files: Sequence[Path] | None = None) -> Result:
    """Score one CT and write the outputs; on failure write qa.json with an error record and re-raise.

    Results are assembled in a staging folder and published only when all are complete; on
    failure only the error record is left (results of an earlier run are removed). ``files`` are
    the series' DICOM files (a batch), else every file below ``input_path`` is looked at.
    """
    from mhub_cpu.bodypart import sr  # pydicom/highdicom only where needed

    timer = StageTimer()
    source: dict = {"path": str(input_path)}
    try:
        with staged_output(output_dir, OUTPUT_FILES, last="qa.json") as staging:
            options = resolve_precision(model, options)  # --precision auto: said before any work on the input
            with timer.stage("read input"):
                volume = read_input(Path(input_path), staging / "work", options.series_uid, files)
                image = volume.image
                series = volume.series
                orient = orientation_of(image)
                if series is not None:
                    source.update(sr.source_summary(series))
                    if orient.slice_axis != 2:
                        raise InputError(
                            f"the images of series {series.series_instance_uid} are not axial: body part regression "
                            "scores axial slices and its SRs reference them as images of the series; give an axial "
                            "series (a NIfTI of this volume is scored, without SR)"
                        )
            scorer = ScoreModel(model, options.precision, threads=options.threads, calibration=options.calibration)
            curve = score_volume(image, model, scorer, options, timer)
            bpreg = bpreg_result(curve, model.settings)
            qa = qa_verdicts(curve, bpreg, model.settings)
            qa["input"] = {**source, **volume.report(), "slices": orient.n_slices,
                           "slice_order": "reversed from stored" if orient.flip else "as stored"}
            qa["model"] = {
                "path": str(model.path), "precision": options.precision.value,
                "precision_requested": "auto" if options.precision_auto else options.precision.value,
                "precision_reason": options.precision_reason or f"requested with --precision {options.precision}",
                "mode": "fast" if options.fast else "faithful",
                "ran": {**options.precision.to_json(), **scorer.ran.to_json(), "cpu": CpuCapabilities.query().to_json()},
            }
            if options.precision is Precision.INT8:
                qa["model"]["int8_ir"] = str(scorer.ir_path)
            if series is not None:
                qa["body_part_examined"]["header_value"] = sr.header_body_part(series)
            with timer.stage("write outputs"):
                write_json(staging / "bpreg.json", bpreg)
                if series is not None:
                    qa["sr"] = sr.write_reports(series, image, orient, curve, model.settings, bpreg, staging)
                if options.crop_from or options.crop_to:
                    if not (options.crop_from and options.crop_to):
                        raise InputError("--crop-from and --crop-to must be given together")
                    first, last = crop_range(curve, model.settings.lookuptable, options.crop_from, options.crop_to)
                    write_crop(image, orient, first, last, staging / "cropped.nii.gz")
                    qa["crop"] = {"from": options.crop_from, "to": options.crop_to, "first_slice": first, "last_slice": last}
                qa = {"status": "ok", **qa, "timing_s": timer.stages}
                write_json(staging / "qa.json", qa)
    except BaseException as exc:
        write_error_record(output_dir, exc, source)
        raise
    log(f"body part examined: {bpreg['body part examined tag']}; verdict: {qa['verdict']}")
    return Result(curve=curve, bpreg=bpreg, qa=qa, timer=timer)


def write_error_record(output_dir: Path, exc: BaseException, source: dict) -> None:
    """Replace any earlier result by ``qa.json`` with ``"status": "error"`` and the cause."""
    if Path(output_dir).is_file():
        return  # --output names a file: nowhere to write (the error says so)
    remove_results(output_dir, OUTPUT_FILES)
    write_json(Path(output_dir) / "qa.json", {"status": "error", "error": error_record(exc), "input": source})
    log(f"wrote error record to {Path(output_dir) / 'qa.json'}")


def error_record(exc: BaseException) -> dict:
    """What failed, as error records say it: type, one-line message, the exit code the command gives."""
    if isinstance(exc, MhubCpuError):
        return {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}
    if isinstance(exc, KeyboardInterrupt):
        return {"type": "Interrupted", "message": "interrupted before the results were complete", "exit_code": 130}
    return {"type": "InternalError", "message": f"{type(exc).__name__}: {exc}", "exit_code": 70}
