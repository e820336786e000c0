"""The network a segmentation runs: a model bundle as cached OpenVINO IR in the run's precision."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mhub_cpu.auto3dseg.bundle import ModelBundle, load_bundle
from mhub_cpu.auto3dseg.catalog import complete_label, load_catalog
from mhub_cpu.auto3dseg.labels import parse_labels_csv
from mhub_cpu.convert.auto3dseg import ConvertedModel, convert_bundle
from mhub_cpu.core.errors import ModelError
from mhub_cpu.core.progress import log
from mhub_cpu.core.resources import calibration_images, demo_model_path
from mhub_cpu.runtime.precision import IrFormat, Precision
from mhub_cpu.segment.calibration import make_quantizer


def resolve_bundle(model: str) -> ModelBundle:
    """``demo`` (the embedded demo model), a catalogue id or name, or a model zip/folder."""
    return load_bundle(str(demo_model_path()) if model == "demo" else model)


def resolve_model_file(model_file: Path) -> ModelBundle:
    """The checkpoint named by 3D Slicer's ``--model-file DIR/model.pt`` (MONAIAuto3DSeg's model folder).

    That folder is an extracted catalogue zip, ``labels.csv`` beside ``model.pt``; the Slicer script
    itself reads only the checkpoint given, so that file is the model (whatever its name), and the
    ``labels.csv`` beside it, where there is one, gives the labels. The model id is the nearest folder
    named by a catalogue id, else the checkpoint's folder name.
    """
    model_file = Path(model_file)
    if not model_file.is_file():
        raise ModelError(f"model file {'is a folder, not a file' if model_file.is_dir() else 'not found'}: {model_file}")
    try:
        checkpoint = model_file.read_bytes()
        labels_csv = model_file.parent / "labels.csv"
        labels_text = labels_csv.read_bytes().decode("utf-8-sig") if labels_csv.is_file() else None
    except OSError as exc:
        raise ModelError(f"cannot read the model in {model_file.parent}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ModelError(f"{labels_csv} is not UTF-8 text") from exc
    # The extension unpacks a catalogue zip into models/<id>/, where labels.csv may sit in a sub-folder.
    entries = {e.id: e for e in load_catalog()}
    model_id = next((folder.name for folder in model_file.parents if folder.name in entries), model_file.parent.name)
    entry = entries.get(model_id)
    labels = [complete_label(label, entry) for label in parse_labels_csv(labels_text)] if labels_text is not None else []
    sha = hashlib.sha256(checkpoint).hexdigest()
    label_note = f"{len(labels)} labels" if labels_text is not None else "no labels.csv beside it"
    log(f"model {model_id} ({model_file}): {label_note}, checkpoint sha256 {sha[:12]}…")
    return ModelBundle(model_id, model_file, checkpoint, sha, labels, entry, sha, False)


def prepare_network(
    bundle: ModelBundle, precision: Precision, calibration: tuple[Path, ...] = (), trust_model: bool = False,
) -> ConvertedModel:
    """The cached IR for ``precision`` (converted, and for int8 quantised on ``calibration`` or the
    engine's calibration CT, on first use)."""
    if precision.ir is IrFormat.INT8:
        quantizer, quantizer_id = make_quantizer(list(calibration) or calibration_images())
        return convert_bundle(bundle, precision.ir, quantizer, quantizer_id, trust_model=trust_model)
    return convert_bundle(bundle, precision.ir, trust_model=trust_model)
