"""``report.json`` of a segmentation: what ran, on what, with which settings, and what it found."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from mhub_cpu.auto3dseg.bundle import ModelBundle
from mhub_cpu.auto3dseg.labels import Label
from mhub_cpu.core.progress import StageTimer, cpu_seconds, peak_rss_mb
from mhub_cpu.core.versions import package_versions
from mhub_cpu.dicomio import InputVolume


def segment_report(
    input_path: Path, segmentation_type: str, bundle: ModelBundle, volume: InputVolume, labels_image: nib.Nifti1Image,
    facts: dict, segments_written: list[Label] | None, timer: StageTimer, outputs: dict[str, str],
) -> dict:
    """The report: versions, model and its hashes, inference facts, input, segments, timing and memory.

    Every segment carries its label value, name, MHub SegDB id (``null`` where SegDB has none),
    voxel count and volume.
    """
    label_map = np.asarray(labels_image.dataobj)
    voxel_ml = float(np.prod(labels_image.header.get_zooms()[:3])) / 1000.0
    values, counts = np.unique(label_map, return_counts=True)
    found = dict(zip(values.tolist(), counts.tolist()))
    return {
        "tool": "mhub-cpu segment",
        "versions": package_versions(),
        "model": {
            "id": bundle.model_id, "version": bundle.version, "source": str(bundle.source),
            "source_sha256": bundle.source_sha256, "checkpoint_sha256": bundle.checkpoint_sha256,
            "sha256_known": bundle.sha256_known,  # false: trusted on first use (no known digest)
        },
        # What ran, what was asked for (auto or a precision) and why: auto's choice is per CPU and model.
        "precision": ran.get("mode") if isinstance(ran := facts.get("precision"), dict) else ran,
        "precision_requested": facts.get("precision_requested"),
        "precision_reason": facts.get("precision_reason"),
        "inference": facts,
        "segmentation_type": segmentation_type,
        "input": {"path": str(input_path), **volume.report()},
        "result": {
            "segments": [
                {"label": label.value, "name": label.name, "segdb_id": label.segdb_id,
                 "voxels": found.get(label.value, 0), "volume_ml": round(found.get(label.value, 0) * voxel_ml, 3)}
                for label in bundle.labels
            ],
            "dicom_seg_segments": [label.name for label in segments_written] if segments_written else None,
        },
        "stages_s": {name: round(seconds, 3) for name, seconds in timer.stages.items()},
        "peak_rss_mb_after_stage": {name: round(mb, 1) for name, mb in timer.peaks_mb.items()},
        "total_s": round(timer.total_s, 3),
        "cpu_s": round(cpu_seconds(), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "outputs": outputs,
    }
