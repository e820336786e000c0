"""``mhub-cpu segment``: CT (DICOM folder or NIfTI) → Auto3DSeg model on OpenVINO → DICOM-SEG.

The input path is checked first; then the model is resolved, converted (once) and checked before the
input is read, so that a model this engine cannot run is refused before any work on the image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import nibabel as nib
import numpy as np

from mhub_cpu.auto3dseg.bundle import ModelBundle
from mhub_cpu.convert.auto3dseg import ConvertedModel
from mhub_cpu.core.errors import ModelError, ProcessingError
from mhub_cpu.core.files import staged_output, write_json
from mhub_cpu.core.progress import StageTimer, log
from mhub_cpu.dicomio import check_input_path, read_input
from mhub_cpu.outputs.dicom_seg import SegmentationType, write_dicom_seg
from mhub_cpu.outputs.preview import write_preview
from mhub_cpu.runtime.precision import Agreement, CpuCapabilities, IrFormat, Precision, choose_precision, require_compute
from mhub_cpu.segment.model import prepare_network, resolve_bundle
from mhub_cpu.segment.pipeline import InferenceSettings, check_settings, segment_image
from mhub_cpu.segment.report import segment_report

#: The stage writing the DICOM-SEG, apart from the other outputs: its cost grows with segments × slices.
WRITE_SEG_STAGE = "write DICOM-SEG"
#: The stages that write results (``report.json`` → ``stages_s``).
WRITE_STAGES = ("write outputs", WRITE_SEG_STAGE)


@dataclass(frozen=True)
class SegmentRequest:
    """Everything ``mhub-cpu segment`` needs (options already parsed into their types)."""

    input_path: Path
    output_dir: Path
    model: str = "demo"
    series_uid: str | None = None
    settings: InferenceSettings = InferenceSettings()
    segmentation_type: SegmentationType = SegmentationType.BINARY
    calibration: tuple[Path, ...] = ()
    trust_model: bool = False
    files: tuple[Path, ...] | None = None  # the series' files (a batch); default: every file below input_path


#: Every file ``segment`` may write into the output folder.
OUTPUT_FILES = ("segmentation.dcm", "segmentation.nii.gz", "preview.png", "report.json")


class Segmenter(Protocol):
    """A labelling engine for the job: prepared once per model, then ``label(image, timer)``."""

    def prepare(self, request: SegmentRequest, bundle: ModelBundle, timer: StageTimer) -> None:
        """Get the model ready and refuse what cannot run, before the input is read."""

    def label(self, image: nib.Nifti1Image, timer: StageTimer) -> tuple[nib.Nifti1Image, dict]:
        """Labels on ``image``'s grid and facts about the run for the report."""


class OpenVinoSegmenter:
    """Our engine: the cached OpenVINO IR in the requested precision, sliding window as requested.

    ``converted`` is an IR prepared beforehand (a batch converts once, before its workers start).
    """

    def __init__(self, converted: ConvertedModel | None = None) -> None:
        self.converted = converted

    def prepare(self, request: SegmentRequest, bundle: ModelBundle, timer: StageTimer) -> None:
        if self.converted is None:
            with timer.stage("prepare network"):
                self.settings = resolve_precision(bundle, request.settings, request.calibration, request.trust_model)
                self.converted = prepare_network(bundle, self.settings.precision, request.calibration, request.trust_model)
        else:
            self.settings = request.settings
        check_settings(self.converted.config, self.settings)

    def label(self, image: nib.Nifti1Image, timer: StageTimer) -> tuple[nib.Nifti1Image, dict]:
        assert self.converted is not None, "prepare() first"
        result = segment_image(image, self.converted, self.settings, timer)
        facts = {
            "engine": "openvino",
            "precision": {**self.settings.precision.to_json(), **result.ran.to_json(), "cpu": CpuCapabilities.query().to_json()},
            "precision_requested": "auto" if self.settings.precision_auto else self.settings.precision.value,
            "precision_reason": self.settings.precision_reason or f"requested with --precision {self.settings.precision}",
            "ir": str(self.converted.xml_path),
            "config": self.converted.config,
            "settings": {
                "overlap": self.settings.overlap, "blend": self.settings.blend, "threads": self.settings.threads,
                "strategy": self.settings.strategy, "skip_air": self.settings.skip_air,
                "max_memory_mb": self.settings.max_memory_mb,
            },
            "windows": result.windows,
            "class_head": "split off: logits computed in chunks while stitching" if result.head_split else "inside OpenVINO",
            "window": list(result.window),
            "model_grid_shape": list(result.model_grid_shape),
            "model_spacing_mm": list(result.model_spacing),
        }
        return result.labels, facts


def resolve_precision(
    bundle: ModelBundle, settings: InferenceSettings, calibration: tuple[Path, ...] = (), trust_model: bool = False,
) -> InferenceSettings:
    """``settings`` with ``--precision auto`` replaced by the precision it picks for this CPU and model.

    bf16 where the CPU runs it natively, else int8 where it has VNNI, each only where its agreement
    with f32 holds against :data:`~mhub_cpu.segment.verify.AUTO_DICE`: as recorded beside its IR by
    ``mhub-cpu verify`` (bf16: measured on one window of the calibration CT where no record is; int8:
    only from verify's record); else f32. Logs the choice and the reason; other settings are returned as they are.
    """
    if not settings.precision_auto or settings.precision_reason:
        return settings
    from mhub_cpu.segment.verify import agreement_with_f32, as_agreement, recorded_agreement

    def agreement(precision: Precision) -> Agreement:
        if precision.ir is not IrFormat.INT8:  # bf16 runs the f32 IR: two inferences of one window
            return as_agreement(agreement_with_f32(bundle, precision, calibration, trust_model))
        record = recorded_agreement(bundle, precision, calibration)
        if record is None:
            raise ModelError(f"no agreement with f32 recorded on this CPU (mhub-cpu verify --model {bundle.model_id} "
                             "--precision int8 measures and records it)")
        return as_agreement(record)

    choice = choose_precision(tuple(Precision), agreement)
    log(choice.log_line())
    return replace(settings, precision=choice.precision, precision_reason=choice.reason)


def run_segment(request: SegmentRequest, segmenter: Segmenter | None = None, bundle: ModelBundle | None = None) -> dict:
    """Segment the input and write the result files into ``request.output_dir``.

    Results are assembled in a staging folder inside the output folder and moved into place
    only when all of them are complete; a failed run leaves no result, not even an earlier one.
    ``bundle`` is the model already resolved (a batch resolves it once), else ``request.model``.

    Returns:
        The report (also written as ``report.json``).
    """
    require_compute(request.settings.precision.compute)  # before any work
    timer = StageTimer()
    with staged_output(request.output_dir, OUTPUT_FILES, last="report.json") as staging:
        report = _segment_into(request, staging, timer, segmenter or OpenVinoSegmenter(), bundle)
    for name in report["outputs"].values():
        log(f"wrote {request.output_dir / name}")
    return report


def _segment_into(request: SegmentRequest, staging: Path, timer: StageTimer, segmenter: Segmenter, bundle: ModelBundle | None) -> dict:
    check_input_path(request.input_path)  # a mistyped path is said at once, not after a model download
    if bundle is None:
        with timer.stage("load model"):
            bundle = resolve_bundle(request.model)
    segmenter.prepare(request, bundle, timer)
    with timer.stage("read input"):
        volume = read_input(request.input_path, staging / "work", request.series_uid, request.files, request.settings.max_memory_mb)
    labels_image, facts = segmenter.label(volume.image, timer)
    label_map = np.asarray(labels_image.dataobj)
    if not label_map.any():
        raise ProcessingError(
            f"the model found none of its {len(bundle.labels)} structures in this image, so there is no segmentation "
            "to write (does the image show the body region the model was trained on?)"
        )
    outputs: dict[str, str] = {}
    segments_written = None
    with timer.stage("write outputs"):
        nib.save(labels_image, staging / "segmentation.nii.gz")
        outputs["nifti"] = "segmentation.nii.gz"
        write_preview(volume.image, labels_image, bundle.labels, staging / "preview.png")
        outputs["preview"] = "preview.png"
    if volume.series is not None:
        with timer.stage(WRITE_SEG_STAGE):
            segments_written = write_dicom_seg(
                labels_image, volume.series, bundle.labels, staging / "segmentation.dcm", bundle.model_id,
                bundle.version, request.segmentation_type,
            )
        outputs["dicom_seg"] = "segmentation.dcm"
    report = segment_report(
        request.input_path, request.segmentation_type, bundle, volume, labels_image, facts, segments_written, timer,
        {**outputs, "report": "report.json"},
    )
    write_json(staging / "report.json", report)
    return report
