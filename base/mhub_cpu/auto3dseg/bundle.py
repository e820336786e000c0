"""Auto3DSeg model files as 3D Slicer's MONAIAuto3DSeg catalogue ships them.

A model is a zip (or its extracted folder) holding ``labels.csv`` and, beside it, ``model.pt``:
a PyTorch pickle of a dict with ``state_dict`` and ``config``; ``config["network"]`` is a MONAI
bundle config from which the network is rebuilt (see :mod:`mhub_cpu.convert`).
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mhub_cpu.auto3dseg.catalog import CatalogEntry, complete_label, find_entry
from mhub_cpu.auto3dseg.labels import Label, parse_labels_csv
from mhub_cpu.core.archives import check_archive
from mhub_cpu.core.cache import cache_dir, fetch, sha256_of
from mhub_cpu.core.errors import ModelError
from mhub_cpu.core.progress import log


@dataclass(frozen=True)
class ModelBundle:
    """A resolved segmentation model: where its checkpoint is and what it segments."""

    model_id: str
    source: Path
    checkpoint_bytes: bytes
    checkpoint_sha256: str
    labels: list[Label]
    catalog_entry: CatalogEntry | None
    source_sha256: str = ""  # of the zip (or of model.pt for a folder)
    sha256_known: bool = False  # the download was checked against a known digest

    @property
    def version(self) -> str:
        """The catalogue version, else the one in a Slicer-style id (``name-vX.Y.Z``), else ``unknown``."""
        if self.catalog_entry is not None:
            return self.catalog_entry.version
        match = re.search(r"-v(\d+\.\d+\.\d+)$", self.model_id)
        return match.group(1) if match else "unknown"


def _read_members(path: Path) -> tuple[bytes, bytes]:
    """Return (labels.csv, model.pt) contents from a zip or a folder, wherever they are nested."""
    if path.is_dir():
        found = sorted(path.rglob("labels.csv"))
        if not found:
            raise ModelError(f"model folder {path} has no labels.csv")
        checkpoint = found[0].parent / "model.pt"
        if not checkpoint.exists():
            raise ModelError(f"model folder {path} has no model.pt beside {found[0]}")
        return found[0].read_bytes(), checkpoint.read_bytes()
    try:
        with zipfile.ZipFile(path) as archive:
            check_archive(archive, path)
            names = archive.namelist()
            labels_names = sorted(n for n in names if n.rsplit("/", 1)[-1] == "labels.csv")
            if not labels_names:
                raise ModelError(f"model zip {path} has no labels.csv (members: {', '.join(names[:10])})")
            folder = labels_names[0][: -len("labels.csv")]
            checkpoint_name = folder + "model.pt"
            if checkpoint_name not in names:
                raise ModelError(f"model zip {path} has no {checkpoint_name} beside {labels_names[0]}")
            return archive.read(labels_names[0]), archive.read(checkpoint_name)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{path} is not a valid zip file: {exc}") from exc


def load_bundle(model: str | Path) -> ModelBundle:
    """Resolve ``model`` (a local zip/folder path, or a catalogue id or name) to a :class:`ModelBundle`.

    Catalogue models are downloaded once into the cache (:func:`mhub_cpu.core.cache.fetch`).
    Label codes and colours missing from ``labels.csv`` are taken from the catalogue, matched by
    segment name (:func:`complete_label`).
    """
    path = Path(model)
    entry: CatalogEntry | None = None
    if path.exists():
        model_id = path.name.removesuffix(".zip")
    elif path.suffix == ".zip" or "/" in str(model):
        raise ModelError(f"model file not found: {model}")
    else:
        entry = find_entry(str(model))
        path = fetch(entry.url, "models", expected_sha256=entry.sha256)
        model_id = entry.id
    labels_bytes, checkpoint_bytes = _read_members(path)
    try:
        labels = parse_labels_csv(labels_bytes.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ModelError(f"labels.csv of {path} is not UTF-8 text") from exc
    if entry is None:
        entry = _entry_by_id(model_id)
    labels = [complete_label(label, entry) for label in labels]
    sha = hashlib.sha256(checkpoint_bytes).hexdigest()
    source_sha = sha256_of(path) if path.is_file() else sha
    log(f"model {model_id}: {len(labels)} labels, checkpoint sha256 {sha[:12]}…")
    known = entry is not None and entry.sha256 is not None and entry.sha256 == source_sha
    if entry is not None and entry.sha256 is None and path.is_relative_to(cache_dir()):
        log(f"note: no known SHA-256 for {entry.id} (configs/auto3dseg_model_sha256.json): trusted on first use, "
            f"sha256 {source_sha}")
    return ModelBundle(model_id, path, checkpoint_bytes, sha, labels, entry, source_sha, known)


def _entry_by_id(model_id: str) -> CatalogEntry | None:
    try:
        return find_entry(model_id)
    except ModelError:
        return None
