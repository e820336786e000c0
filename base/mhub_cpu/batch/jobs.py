"""The jobs a batch runs on each series: prepared once on the client, then run in the workers.

Preparing resolves the model (a download happens once, here), converts it to OpenVINO IR (the
workers find it in the cache and never convert) and refuses settings the job cannot run, before
any series is submitted. A prepared job is small and picklable: a segmentation job carries the
model's labels and hashes but not its checkpoint.

A series' **job key** is the SHA-256 of what its result depends on: the engine's and its
libraries' versions, the model's checkpoint digest, the IR, every setting, and the series' file
names, sizes and modification times. It is written into the series' record (``report.json`` /
``qa.json``), so a rerun skips a series whose outputs are complete for the same key.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mhub_cpu.auto3dseg.bundle import ModelBundle
from mhub_cpu.bodypart.modelfiles import ModelDir, resolve_model
from mhub_cpu.bodypart.pipeline import Options, error_record, run
from mhub_cpu.bodypart.pipeline import resolve_precision as resolve_bodypart_precision
from mhub_cpu.convert.auto3dseg import ConvertedModel
from mhub_cpu.convert.ir_cache import file_fingerprint, read_record
from mhub_cpu.core.versions import package_versions
from mhub_cpu.outputs.dicom_seg import SegmentationType
from mhub_cpu.runtime.precision import require_compute
from mhub_cpu.segment.job import OpenVinoSegmenter, SegmentRequest, resolve_precision, run_segment
from mhub_cpu.segment.memory import estimated_peak_mb, footprint_of
from mhub_cpu.segment.model import prepare_network, resolve_bundle
from mhub_cpu.segment.pipeline import InferenceSettings, check_settings
from mhub_cpu.segment.splitter import make_plan

#: The extent of a typical CT after the foreground crop (a torso: 36 × 26 cm in-plane, 40 cm
#: long), for the default memory budget of a segmentation when ``--max-memory`` is not given.
TYPICAL_CT_MM = (360.0, 260.0, 400.0)
#: The default memory budget of body part regression (the issue's target; a 512×512×600 CT peaks
#: at about 820 MiB, see the README's benchmark).
BODYPART_BUDGET_MB = 1500.0
#: Error record of a failed segmentation (``segment`` itself leaves no file when it fails).
SEGMENT_ERROR = "error.json"


@dataclass(frozen=True)
class SeriesInput:
    """What a worker needs to know about one series."""

    study_uid: str
    series_uid: str
    files: tuple[Path, ...]
    input_dir: Path


def series_key(key_base: str, files: Sequence[Path]) -> str:
    """The job key of a series: the job's key with the series' file names, sizes and mtimes."""
    listing = []
    for path in sorted(files, key=lambda p: p.name):
        stat = path.stat()
        listing.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join([key_base, *listing]).encode()).hexdigest()


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _stamped_record(path: Path, key: str) -> dict | None:
    """The record at ``path`` if a batch run with job key ``key`` wrote it."""
    record = read_record(path)
    return record if record is not None and (record.get("batch") or {}).get("job_key") == key else None


def segment_key_base(checkpoint_sha256: str, ir_name: str, settings: InferenceSettings, segmentation_type: str) -> str:
    """The segmentation job's part of the job key: versions, checkpoint, IR (its cache folder names
    format and calibration), and every setting that changes the result (threads do not)."""
    return _digest({
        "job": "segment", "versions": package_versions(), "checkpoint_sha256": checkpoint_sha256, "ir": ir_name,
        "segmentation_type": str(segmentation_type),
        "settings": {
            "precision": settings.precision.value, "overlap": settings.overlap, "blend": str(settings.blend),
            "strategy": str(settings.strategy), "skip_air": settings.skip_air, "max_memory_mb": settings.max_memory_mb,
        },
    })


@dataclass(frozen=True)
class SegmentJob:
    """``mhub-cpu segment`` on every series: same outputs, same settings, same model."""

    model: str
    settings: InferenceSettings
    segmentation_type: SegmentationType
    bundle: ModelBundle  #: without its checkpoint bytes (workers need labels and hashes only)
    converted: ConvertedModel
    key_base: str
    kind: str = "segment"
    record: str = "report.json"
    error_file: str = SEGMENT_ERROR

    @classmethod
    def prepare(
        cls, model: str, settings: InferenceSettings, segmentation_type: SegmentationType = SegmentationType.BINARY,
        calibration: tuple[Path, ...] = (), trust_model: bool = False,
    ) -> SegmentJob:
        """Resolve and convert the model and check the settings (raises what ``segment`` raises)."""
        require_compute(settings.precision.compute)
        bundle = resolve_bundle(model)
        settings = resolve_precision(bundle, settings, calibration, trust_model)  # --precision auto: chosen once, here
        converted = prepare_network(bundle, settings.precision, calibration, trust_model)
        check_settings(converted.config, settings)
        key_base = segment_key_base(bundle.checkpoint_sha256, converted.xml_path.parent.name, settings, segmentation_type)
        light = replace(bundle, checkpoint_bytes=b"")
        return cls(model, settings, segmentation_type, light, converted, key_base)

    def with_threads(self, threads: int | None) -> SegmentJob:
        return replace(self, settings=replace(self.settings, threads=threads))

    def describe(self) -> dict:
        """The job as ``batch.json`` states it."""
        return {
            "kind": self.kind, "model": self.bundle.model_id, "checkpoint_sha256": self.bundle.checkpoint_sha256,
            "ir": str(self.converted.xml_path), "precision": self.settings.precision.value, "overlap": self.settings.overlap,
            "blend": self.settings.blend.value, "windows": self.settings.strategy.value, "skip_air": self.settings.skip_air,
            "max_memory_mb": self.settings.max_memory_mb, "seg_type": self.segmentation_type.value,
            "threads": self.settings.threads, "key": self.key_base,
        }

    def default_budget_mb(self) -> float:
        """Memory per series: ``--max-memory`` if given, else the memory model's peak for the model's
        own window on a typical CT (:data:`TYPICAL_CT_MM`)."""
        if self.settings.max_memory_mb is not None:
            return float(self.settings.max_memory_mb)
        config = self.converted.config
        spacing = config.get("resample_resolution") or (1.0, 1.0, 1.0)
        x, y, z = (max(1, math.ceil(mm / float(s))) for mm, s in zip(TYPICAL_CT_MM, spacing))
        rx, ry, rz = (int(v) for v in config["roi_size"])
        plan = make_plan((x, y, z), (rx, ry, rz), self.settings.strategy, self.settings.overlap, int(config.get("size_divisor", 16)))
        footprint = footprint_of(self.converted, self.settings.threads)
        return math.ceil(estimated_peak_mb(plan, (x, y, z), footprint) / 100) * 100.0

    def run(self, series: SeriesInput, output_dir: Path) -> None:
        """Segment one series into ``output_dir`` (``report.json`` last)."""
        request = SegmentRequest(
            input_path=series.input_dir, output_dir=output_dir, model=self.model, series_uid=series.series_uid,
            settings=self.settings, segmentation_type=self.segmentation_type, files=series.files,
        )
        run_segment(request, OpenVinoSegmenter(self.converted), self.bundle)

    @staticmethod
    def failure_record(output_dir: Path, exc: BaseException, series: SeriesInput) -> dict:
        """The content of ``error.json``: the cause, as ``segment`` would say it, and which series it was."""
        return {"status": "error", "error": error_record(exc), "input": _source(series)}

    def complete(self, output_dir: Path, key: str) -> dict | None:
        """The report of a complete result for ``key`` in ``output_dir``, else None."""
        report = _stamped_record(output_dir / self.record, key)
        if report is None or report.get("status") == "error" or not isinstance(report.get("outputs"), dict):
            return None
        return report if all((output_dir / name).is_file() for name in report["outputs"].values()) else None

    @staticmethod
    def key_results(record: dict) -> dict:
        """The columns of the summary for this job: the structures found."""
        segments = (record.get("result") or {}).get("segments") or []
        found = [segment["name"] for segment in segments if segment.get("voxels")]
        return {"structures_found": len(found), "structures": "; ".join(found)}

    @staticmethod
    def stage_seconds(record: dict) -> dict[str, float]:
        return dict(record.get("stages_s") or {})


@dataclass(frozen=True)
class BodypartJob:
    """``mhub-cpu bodypart`` on every series."""

    model: ModelDir
    options: Options = field(default_factory=Options)
    key_base: str = ""
    budget_mb: float = BODYPART_BUDGET_MB
    kind: str = "bodypart"
    record: str = "qa.json"
    error_file: str = "qa.json"

    @classmethod
    def prepare(cls, model: str | None, options: Options, budget_mb: float | None = None) -> BodypartJob:
        """Resolve the model and convert (for int8 quantise) its network once, here; ``budget_mb`` is
        the memory of one series (default :data:`BODYPART_BUDGET_MB`)."""
        from mhub_cpu.bodypart.model import ir_path  # OpenVINO conversion: only when preparing

        require_compute(options.precision.compute)
        resolved = resolve_model(model)
        options = resolve_bodypart_precision(resolved, options)  # --precision auto: chosen once, here
        ir = ir_path(resolved, options.precision, options.calibration)
        key_base = _digest({
            "job": "bodypart", "versions": package_versions(), "model": resolved.fingerprint(), "ir": ir.parent.name,
            "precision": options.precision.value, "fast": options.fast, "crop": [options.crop_from, options.crop_to],
            "calibration": file_fingerprint(options.calibration) if options.calibration else None,
        })
        return cls(resolved, replace(options, series_uid=None), key_base, budget_mb or BODYPART_BUDGET_MB)

    def with_threads(self, threads: int | None) -> BodypartJob:
        return replace(self, options=replace(self.options, threads=threads))

    def describe(self) -> dict:
        return {
            "kind": self.kind, "model": str(self.model.path), "model_fingerprint": self.model.fingerprint(),
            "precision": self.options.precision.value, "fast": self.options.fast, "crop_from": self.options.crop_from,
            "crop_to": self.options.crop_to, "threads": self.options.threads, "key": self.key_base,
        }

    def default_budget_mb(self) -> float:
        return self.budget_mb

    def run(self, series: SeriesInput, output_dir: Path) -> None:
        """Score one series into ``output_dir`` (``qa.json`` last; on failure it holds the error)."""
        options = replace(self.options, series_uid=series.series_uid)
        run(series.input_dir, output_dir, self.model, options, series.files)

    def failure_record(self, output_dir: Path, exc: BaseException, series: SeriesInput) -> dict:
        """The content of ``qa.json`` with ``"status": "error"``: the one ``bodypart`` wrote when it failed."""
        record = read_record(output_dir / self.record)
        if record is not None and record.get("status") == "error":
            return record
        return {"status": "error", "error": error_record(exc), "input": _source(series)}

    def complete(self, output_dir: Path, key: str) -> dict | None:
        qa = _stamped_record(output_dir / self.record, key)
        if qa is None or qa.get("status") != "ok":
            return None
        names = ["bpreg.json"] + [report["file"] for report in (qa.get("sr") or {}).values() if isinstance(report, dict)]
        if qa.get("crop"):
            names.append("cropped.nii.gz")
        return qa if all((output_dir / name).is_file() for name in names) else None

    @staticmethod
    def key_results(record: dict) -> dict:
        """The columns of the summary for this job: the verdict and the body part examined."""
        return {"verdict": record.get("verdict"), "body_part": (record.get("body_part_examined") or {}).get("bpreg_tag")}

    @staticmethod
    def stage_seconds(record: dict) -> dict[str, float]:
        return dict(record.get("timing_s") or {})


#: Either job; both offer the same methods.
BatchJob = SegmentJob | BodypartJob


def _source(series: SeriesInput) -> dict:
    return {
        "path": str(series.input_dir), "series_instance_uid": series.series_uid, "study_instance_uid": series.study_uid,
        "files": len(series.files),
    }
