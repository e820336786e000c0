"""``mhub-cpu segment``: CT (DICOM folder or NIfTI) → Auto3DSeg model on OpenVINO → DICOM-SEG."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

from .auto3dseg.bundle import ModelBundle, load_bundle
from .auto3dseg.catalog import demo_model_path
from .conversion import ConvertedModel, convert_bundle
from .conversion.quantize import default_calibration_images, make_quantizer
from .dicomio import InputVolume, read_input
from .dicomio.geometry import axis_mapping, dicom_grid_affine_ras
from .errors import MhubCpuError, ProcessingError
from .inference.pipeline import InferenceSettings, segment_image
from .inference.precision import CpuCapabilities, require_compute
from .outputs.dicom_seg import write_dicom_seg
from .outputs.preview import write_preview
from .outputs.files import staged_output, write_json
from .outputs.report import package_versions
from .progress import StageTimer, cpu_seconds, log, peak_rss_mb

#: ``--precision`` modes: (IR weight format, OpenVINO compute precision).
PRECISION_MODES = {
    "f32": ("fp32", "f32"),
    "bf16": ("fp32", "bf16"),
    "fp16": ("fp16", "f32"),
    "int8": ("int8", "f32"),  # INT8 where NNCF quantised, f32 elsewhere
}


@dataclass(frozen=True)
class SegmentRequest:
    """Everything ``mhub-cpu segment`` needs."""

    input_path: Path
    output_dir: Path
    model: str = "demo"
    series_uid: str | None = None
    precision: str = "f32"
    overlap: float = 0.625
    blend: str = "gaussian"
    threads: int | None = None
    strategy: str = "dense"
    skip_air: bool = False
    segmentation_type: str = "BINARY"
    calibration: tuple[Path, ...] = ()
    max_memory_mb: float | None = None
    trust_model: bool = False


#: Every file ``segment`` may write into the output folder.
OUTPUT_FILES = ("segmentation.dcm", "segmentation.nii.gz", "preview.png", "report.json")

#: A labelling engine: ``(request, bundle, image, timer) -> (labels on image's grid, model facts)``.
Segmenter = Callable[[SegmentRequest, ModelBundle, nib.Nifti1Image, StageTimer], tuple[nib.Nifti1Image, dict]]


def prepare_network(
    bundle: ModelBundle, precision: str, calibration: tuple[Path, ...] = (), trust_model: bool = False,
) -> ConvertedModel:
    """The cached IR for ``precision`` (converted, and for int8 quantised, on first use)."""
    ir_variant = PRECISION_MODES[precision][0]
    if ir_variant == "int8":
        quantizer, quantizer_id = make_quantizer(list(calibration) or default_calibration_images())
        return convert_bundle(bundle, ir_variant, quantizer, quantizer_id, trust_model=trust_model)
    return convert_bundle(bundle, ir_variant, trust_model=trust_model)


def openvino_segmenter(request: SegmentRequest, bundle: ModelBundle, image: nib.Nifti1Image, timer: StageTimer) -> tuple[nib.Nifti1Image, dict]:
    """Our engine: the cached OpenVINO IR in the requested precision, sliding window as requested."""
    with timer.stage("prepare network"):
        converted = prepare_network(bundle, request.precision, request.calibration, request.trust_model)
    compute = PRECISION_MODES[request.precision][1]
    settings = InferenceSettings(
        request.overlap, request.blend, compute, request.threads, request.strategy, request.skip_air,
        request.max_memory_mb,
    )
    result = segment_image(image, converted, settings, timer)
    facts = {
        "engine": "openvino",
        "precision": {
            "mode": request.precision, "ir_variant": converted.ir_variant, **result.ran.to_json(),
            "cpu": CpuCapabilities.query().to_json(),
        },
        "ir": str(converted.xml_path),
        "ir_variant": converted.ir_variant,
        "config": converted.config,
        "settings": asdict(settings),
        "windows": result.windows,
        "window": list(result.window),
        "model_grid_shape": list(result.model_grid_shape),
        "model_spacing_mm": list(result.model_spacing),
    }
    return result.labels, facts


def run_segment(request: SegmentRequest, segmenter: Segmenter = openvino_segmenter) -> dict:
    """Segment the input and write the result files into ``request.output_dir``.

    Results are assembled in a staging folder inside the output folder and moved into place
    only when all of them are complete; a failed run leaves no result, not even an earlier one.

    Returns:
        The report (also written as ``report.json``).
    """
    if request.precision not in PRECISION_MODES:
        raise ProcessingError(f"unknown precision {request.precision!r}; choose one of {', '.join(PRECISION_MODES)}")
    require_compute(PRECISION_MODES[request.precision][1])  # before any work
    timer = StageTimer()
    with staged_output(request.output_dir, OUTPUT_FILES, last="report.json") as staging:
        report = _segment_into(request, staging, timer, segmenter)
    for name in report["outputs"].values():
        log(f"wrote {request.output_dir / name}")
    return report


def _segment_into(request: SegmentRequest, staging: Path, timer: StageTimer, segmenter: Segmenter) -> dict:
    with timer.stage("read input"):
        volume = read_input(request.input_path, staging / "work", request.series_uid)
    with timer.stage("load model"):
        bundle = load_bundle(str(demo_model_path()) if request.model == "demo" else request.model)
    image = volume.image
    labels_image, facts = segmenter(request, bundle, image, timer)
    label_map = np.asarray(labels_image.dataobj)
    if not label_map.any():
        raise ProcessingError(
            f"the model found none of its {len(bundle.labels)} structures in this image, so there is no segmentation "
            "to write (does the image show the body region the model was trained on?)"
        )

    outputs: dict[str, str] = {}
    with timer.stage("write outputs"):
        nib.save(labels_image, staging / "segmentation.nii.gz")
        outputs["nifti"] = "segmentation.nii.gz"
        write_preview(image, labels_image, bundle.labels, staging / "preview.png")
        outputs["preview"] = "preview.png"
        segments_written = None
        if volume.series is not None:
            series = volume.series
            first = series.instances[0]
            mapping = axis_mapping(
                labels_image.affine, labels_image.shape, dicom_grid_affine_ras(series.instances),
                (int(first.Columns), int(first.Rows), len(series.instances)),
            )
            dicom_order = np.ascontiguousarray(mapping.apply(label_map).transpose(2, 1, 0))
            version = bundle.catalog_entry.version if bundle.catalog_entry else _version_of(bundle.model_id)
            segments_written = write_dicom_seg(
                dicom_order, series, bundle.labels, staging / "segmentation.dcm", bundle.model_id, version,
                request.segmentation_type,
            )
            outputs["dicom_seg"] = "segmentation.dcm"
    voxel_ml = float(np.prod(labels_image.header.get_zooms()[:3])) / 1000.0
    values, counts = np.unique(label_map, return_counts=True)
    found = dict(zip(values.tolist(), counts.tolist()))
    report = {
        "tool": "mhub-cpu segment",
        "versions": package_versions(),
        "model": {
            "id": bundle.model_id, "source": str(bundle.source), "source_sha256": bundle.source_sha256,
            "checkpoint_sha256": bundle.checkpoint_sha256,
            "sha256_known": bundle.sha256_known,  # false: trusted on first use (no known digest)
        },
        "inference": facts,
        "segmentation_type": request.segmentation_type,
        "input": _input_report(request, volume),
        "result": {
            "segments": [
                {"label": label.value, "name": label.name, "voxels": found.get(label.value, 0),
                 "volume_ml": round(found.get(label.value, 0) * voxel_ml, 3)}
                for label in bundle.labels
            ],
            "dicom_seg_segments": [label.name for label in segments_written] if segments_written else None,
        },
        "stages_s": {name: round(seconds, 3) for name, seconds in timer.stages.items()},
        "peak_rss_mb_after_stage": {name: round(mb, 1) for name, mb in timer.peaks_mb.items()},
        "total_s": round(timer.total_s, 3),
        "cpu_s": round(cpu_seconds(), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "outputs": {**outputs, "report": "report.json"},
    }
    write_json(staging / "report.json", report)
    return report


def _version_of(model_id: str) -> str:
    """Version from a Slicer-style model id (``name-vX.Y.Z``), else ``unknown``."""
    match = re.search(r"-v(\d+\.\d+\.\d+)$", model_id)
    return match.group(1) if match else "unknown"


def _input_report(request: SegmentRequest, volume: InputVolume) -> dict:
    return {"path": str(request.input_path), **volume.report()}


__all__ = ["PRECISION_MODES", "SegmentRequest", "run_segment", "MhubCpuError"]
