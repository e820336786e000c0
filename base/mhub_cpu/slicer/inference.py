"""``mhub-cpu slicer-inference``: 3D Slicer's MONAIAuto3DSeg inference script, run on our OpenVINO pipeline.

The extension runs ``auto3dseg_segresnet_inference.py --model-file DIR/model.pt --image-file
IN.nrrd --result-file OUT.nrrd`` (plus ``--image-file-2..4`` for multi-input models) and reads
``OUT.nrrd`` back as a label map with the values of ``labels.csv``. This does the same with the
segmentation pipeline of ``mhub-cpu segment`` (the Slicer script's preprocessing, windows and
restoration; see the README): the IR beside ``model.pt`` when ``mhub-cpu convert --model-file``
wrote one, else the cached conversion. What the script does by model path is kept: a model path
holding ``whole-head`` keeps the two largest connected components of each label; ``brats``
(multi-input MR) is refused, as are several input images for now.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from mhub_cpu.auto3dseg.bundle import ModelBundle
from mhub_cpu.convert.auto3dseg import ConvertedModel, ConverterMissing
from mhub_cpu.core.errors import InputError, ModelError
from mhub_cpu.core.files import staged_output
from mhub_cpu.core.progress import StageTimer, log, peak_rss_mb
from mhub_cpu.dicomio.volume import checked_volume
from mhub_cpu.runtime.precision import Precision, require_compute
from mhub_cpu.segment.model import prepare_network, resolve_model_file
from mhub_cpu.segment.pipeline import InferenceSettings, check_settings, segment_image
from mhub_cpu.slicer.model_folder import ir_beside
from mhub_cpu.slicer.nrrd_files import read_nrrd, write_label_nrrd, write_working_nifti

#: What the extension writes and reads back (``input-volume0.nrrd``, ``output-segmentation.nrrd``).
NRRD_SUFFIX = ".nrrd"
#: The Slicer script keeps this many largest components per label for models whose path names ``whole-head``.
WHOLE_HEAD_COMPONENTS = 2


@dataclass(frozen=True)
class SlicerRequest:
    """The Slicer script's arguments, and the engine options ``slicer-inference`` adds."""

    model_file: Path
    image_file: Path
    result_file: Path
    extra_image_files: tuple[tuple[str, Path], ...] = ()  #: ``(option, path)`` of ``--image-file-2..4``
    save_mode: str | None = None
    precision: Precision = Precision.F32
    threads: int | None = None
    trust_model: bool = False


def check_result_path(result_file: Path) -> None:
    """Refuse a result name Slicer could not read back, before anything at that path is touched."""
    if result_file.suffix.lower() != NRRD_SUFFIX:
        raise InputError(f"--result-file {result_file} must end in .nrrd: the result is a NRRD label map, which Slicer reads back")
    if result_file.is_dir():
        raise InputError(f"--result-file {result_file} is a folder")
    if result_file.parent.exists() and not result_file.parent.is_dir():
        raise InputError(f"--result-file {result_file}: {result_file.parent} is a file, not a folder")


def run_slicer_inference(request: SlicerRequest) -> dict:
    """Segment ``request.image_file`` and write the label map to ``request.result_file``.

    The result is written in a staging folder beside it and renamed into place when complete; on
    any failure there is no file at ``result_file`` (an earlier run's is removed too, so it cannot
    pass for this run's).

    Returns:
        What ran: model, IR and where it came from, windows, labels found, seconds.
    """
    result_file = Path(request.result_file)
    check_result_path(result_file)
    timer = StageTimer()
    with staged_output(result_file.parent, [result_file.name], last=result_file.name) as staging:
        summary = _infer_into(request, staging, timer)
    log(f"wrote {result_file}")
    log(f"done in {timer.total_s:.1f} s, peak memory {peak_rss_mb():.0f} MiB, {len(summary['labels_found'])} labels found")
    return summary


def _infer_into(request: SlicerRequest, staging: Path, timer: StageTimer) -> dict:
    _refuse_unsupported(request)
    image_file = Path(request.image_file)
    if not image_file.is_file():
        raise InputError(f"--image-file {image_file} does not exist" if not image_file.exists() else f"--image-file {image_file} is not a file")
    if image_file.suffix.lower() != NRRD_SUFFIX:
        raise InputError(f"--image-file {image_file} is not a .nrrd file (the extension writes NRRD; for NIfTI or DICOM use mhub-cpu segment)")
    require_compute(request.precision.compute)
    settings = InferenceSettings(precision=request.precision, threads=request.threads)
    with timer.stage("load model"):
        bundle = resolve_model_file(request.model_file)
        converted = ir_beside(bundle, request.model_file, request.precision)
        source = "beside model.pt" if converted is not None else "cache"
    if converted is None:
        with timer.stage("prepare network"):
            converted = _cached_network(bundle, request)
    check_settings(converted.config, settings)
    with timer.stage("read input"):
        volume = read_nrrd(image_file)
        header = volume.header
        working = write_working_nifti(volume, staging / "work" / "image.nii")
        del volume
        image, check = checked_volume(working, staging / "work")
        log(f"input {image_file.name}: {'x'.join(str(n) for n in image.shape)} voxels, space {header.get('space')}, "
            f"HU {check.hu_range[0]:g}..{check.hu_range[1]:g}")
    result = segment_image(image, converted, settings, timer)
    labels = np.asarray(result.labels.dataobj)
    if "whole-head" in str(request.model_file):
        with timer.stage("keep largest components"):
            labels = keep_largest_components(labels, WHOLE_HEAD_COMPONENTS)
    found = [int(v) for v in np.unique(labels) if v]
    if not found:
        log(f"warning: the model found none of its {len(bundle.labels) or 'output'} structures in this image; "
            "the result is an empty label map")
    with timer.stage("write result"):
        write_label_nrrd(staging / Path(request.result_file).name, labels, header)
    return {
        "result_file": str(request.result_file), "model": bundle.model_id, "checkpoint_sha256": bundle.checkpoint_sha256,
        "ir": str(converted.xml_path), "ir_source": source, "precision": request.precision.value, "windows": result.windows,
        "labels_found": found, "stages_s": dict(timer.stages),
    }


def _refuse_unsupported(request: SlicerRequest) -> None:
    """What the Slicer script does and this backend does not (yet), said before any work."""
    if request.extra_image_files:
        option, path = request.extra_image_files[0]
        raise InputError(f"{option} {path}: models with several input volumes are not supported yet (mhub-cpu runs single-CT models)")
    if request.save_mode == "brats" or "brats" in str(request.model_file):
        raise ModelError("BraTS models (--save-mode brats, or 'brats' in the model path) are multi-input MR models, "
                         "which mhub-cpu does not run (single-CT models only)")


def _cached_network(bundle: ModelBundle, request: SlicerRequest) -> ConvertedModel:
    """The cached conversion; without torch (where only the runtime is installed) say how to get an IR."""
    try:
        return prepare_network(bundle, request.precision, (), request.trust_model)
    except (ModuleNotFoundError, ConverterMissing) as exc:
        missing = "torch" if isinstance(exc, ConverterMissing) else exc.name
        if missing not in ("torch", "monai", "nncf"):
            raise
        raise ModelError(
            f"no usable OpenVINO IR beside {request.model_file} and {missing} is not installed to convert it: run "
            f"`mhub-cpu convert --model-file {request.model_file} --precision {request.precision}` where the converter is installed"
        ) from exc


def keep_largest_components(labels: np.ndarray, count: int) -> np.ndarray:
    """Keep the ``count`` largest connected components (26-connected) of each label, as MONAI's
    ``KeepLargestConnectedComponent(num_components=count)`` does on a label map; other voxels become 0."""
    out = np.array(labels, copy=True)
    structure = np.ones((3, 3, 3), dtype=bool)
    for value, box in enumerate(ndimage.find_objects(out), start=1):
        if box is None:
            continue
        mask = out[box] == value
        components, number = ndimage.label(mask, structure=structure)
        if number <= count:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        keep = np.zeros(sizes.shape[0], dtype=bool)
        keep[np.argsort(sizes)[::-1][:count]] = True
        out[box][mask & ~keep[components]] = 0
    return out
