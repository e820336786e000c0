"""One body-part-regression run: input volume -> scores -> bpreg.json, qa.json, SR, crop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from mhub_cpu.bodypart.model import ScoreModel
from mhub_cpu.bodypart.modelfiles import ModelDir
from mhub_cpu.bodypart.outputs import bpreg_result, crop_range, write_crop
from mhub_cpu.bodypart.postprocess import ScoreCurve, score_curve
from mhub_cpu.bodypart.preprocess import orientation_of, prepare_slices
from mhub_cpu.bodypart.qa import qa_verdicts
from mhub_cpu.core.errors import InputError, MhubCpuError
from mhub_cpu.core.files import remove_results, staged_output, write_json
from mhub_cpu.core.progress import StageTimer, log
from mhub_cpu.dicomio import read_input
from mhub_cpu.runtime.precision import CpuCapabilities, Precision

OUTPUT_FILES = ("bpreg.json", "qa.json", "bpr_landmarks_sr.dcm", "bpr_regions_sr.dcm", "cropped.nii.gz")
MIN_SLICES = 2
FAST_STEP_MM = 2.5  # scored-slice spacing of the fast mode


@dataclass
class Options:
    """How to score a CT (the ``bodypart`` command's options)."""

    precision: Precision = Precision.F32
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
                "path": str(model.path), "precision": options.precision.value, "mode": "fast" if options.fast else "faithful",
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
