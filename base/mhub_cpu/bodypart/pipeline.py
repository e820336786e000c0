"""One body-part-regression run: input volume -> scores -> bpreg.json, qa.json, SR, crop."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ..dicomio.nifti import load_nifti
from ..errors import InputError, MhubCpuError
from ..progress import StageTimer, log
from .modelfiles import ModelDir
from .model import ScoreModel
from .outputs import bpreg_result, crop_range, write_crop, write_json
from .postprocess import ScoreCurve, score_curve
from .preprocess import orientation_of, prepare_slices
from .qa import qa_verdicts

OUTPUT_FILES = ("bpreg.json", "qa.json", "bpr_landmarks_sr.dcm", "bpr_regions_sr.dcm", "cropped.nii.gz")
MIN_SLICES = 2
FAST_STEP_MM = 2.5  # scored-slice spacing of the fast mode


@dataclass
class Options:
    precision: str = "f32"
    fast: bool = False
    crop_from: str | None = None
    crop_to: str | None = None
    series_uid: str | None = None
    calibration: list[Path] | None = None  # int8 calibration CT (default: the shared sample CTs)


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


def looks_like_ct(hu_range: tuple[float, float]) -> bool:
    """CT in Hounsfield units has air (about -1000 HU) in the field of view."""
    low, high = hu_range
    return -3100 <= low <= -500 and high > low


def score_volume(image: nib.Nifti1Image, model: ModelDir, scorer: ScoreModel, options: Options, timer: StageTimer) -> ScoreCurve:
    """Raw scores for every slice (interpolated between scored slices in fast mode), post-processed.

    Raises:
        InputError: fewer than two slices, non-axial, too small in-plane, or not CT intensities.
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
    if not looks_like_ct(prepared.hu_range):
        raise InputError(
            f"intensities {prepared.hu_range[0]:g}..{prepared.hu_range[1]:g} do not look like CT in Hounsfield units "
            "(no air around -1000 HU); body part regression needs CT"
        )
    with timer.stage(f"inference ({len(indices)} slices, {scorer.precision})"):
        raw = scorer.predict(prepared.slices)
    if len(indices) < orient.n_slices:
        raw = np.interp(np.arange(orient.n_slices), indices, raw)
    return score_curve(raw, orient.spacing[2], model.settings)


def run(input_path: Path, output_dir: Path, model: ModelDir, options: Options) -> Result:
    """Score one CT and write the outputs; on failure write qa.json with an error record and re-raise."""
    from . import sr  # pydicom/highdicom only where needed

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:  # never leave results of an earlier run beside an error record
        (output_dir / name).unlink(missing_ok=True)
    timer = StageTimer()
    source: dict = {"path": str(input_path)}
    try:
        with tempfile.TemporaryDirectory(prefix="bodypart-") as work:
            with timer.stage("read input"):
                volume = read_volume(Path(input_path), Path(work), options.series_uid)
                image = load_nifti(volume.nifti_path)
                series = volume.series
                if series is not None:
                    source.update(sr.source_summary(series))
            scorer = ScoreModel(model, options.precision, calibration=options.calibration)
            curve = score_volume(image, model, scorer, options, timer)
            bpreg = bpreg_result(curve, model.settings)
            qa = qa_verdicts(curve, bpreg, model.settings)
            orient = orientation_of(image)
            qa["input"] = {**source, "slices": orient.n_slices, "slice_order": "reversed from stored" if orient.flip else "as stored"}
            qa["model"] = {"path": str(model.path), "precision": options.precision, "mode": "fast" if options.fast else "faithful"}
            if options.precision == "int8":
                qa["model"]["int8_ir"] = str(scorer.ir_path)
            if series is not None:
                qa["body_part_examined"]["header_value"] = sr.header_body_part(series)
            with timer.stage("write outputs"):
                write_json(output_dir / "bpreg.json", bpreg)
                if series is not None:
                    qa["sr"] = sr.write_reports(series, image, orient, curve, model.settings, bpreg, output_dir)
                if options.crop_from or options.crop_to:
                    if not (options.crop_from and options.crop_to):
                        raise InputError("--crop-from and --crop-to must be given together")
                    first, last = crop_range(curve, model.settings.lookuptable, options.crop_from, options.crop_to)
                    write_crop(image, orient, first, last, output_dir / "cropped.nii.gz")
                    qa["crop"] = {"from": options.crop_from, "to": options.crop_to, "first_slice": first, "last_slice": last}
                qa = {"status": "ok", **qa, "timing_s": timer.stages}
                write_json(output_dir / "qa.json", qa)
    except MhubCpuError as exc:
        for name in OUTPUT_FILES:
            (output_dir / name).unlink(missing_ok=True)
        write_json(
            output_dir / "qa.json",
            {"status": "error", "error": {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}, "input": source},
        )
        log(f"wrote error record to {output_dir / 'qa.json'}")
        raise
    log(f"body part examined: {bpreg['body part examined tag']}; verdict: {qa['verdict']}")
    return Result(curve=curve, bpreg=bpreg, qa=qa, timer=timer)


def read_volume(path: Path, work_dir: Path, series_uid: str | None):
    """The lead's DICOM/NIfTI reader (``mhub_cpu.dicomio.read_input``)."""
    from ..dicomio import read_input

    return read_input(path, work_dir, series_uid)
