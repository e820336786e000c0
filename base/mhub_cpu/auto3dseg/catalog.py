"""The segmentation model catalogue (``configs/auto3dseg_models.json``) and model resolution."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from mhub_cpu.auto3dseg.labels import Code, Label
from mhub_cpu.core.errors import ModelError
from mhub_cpu.core.resources import configs_dir


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable model version of the catalogue."""

    id: str
    name: str
    version: str
    title: str
    url: str
    sha256: str | None
    license: str
    deprecated: bool
    quick: bool
    reference_cpu_seconds: float | None
    segments: dict[str, dict]

    def label_defaults(self, label: Label) -> Label:
        """``label`` completed with this entry's codes and colour for a segment of that name."""
        segment = self.segments.get(label.name)
        return label if segment is None else _complete(label, segment)


def _complete(label: Label, segment: dict) -> Label:
    codes = {
        key: Code(value["scheme"], value["value"], value["meaning"])
        for key in ("category", "type", "type_modifier", "anatomic_region", "anatomic_region_modifier")
        if (value := segment.get(key))
    }
    color = tuple(segment["color"]) if segment.get("color") else None
    return label.with_defaults(codes, color, segment.get("mhub_segdb_id"))


def complete_label(label: Label, entry: CatalogEntry | None) -> Label:
    """Fill a label's missing codes and colour from its model's catalogue entry or, failing that,
    from the first current catalogue model with a segment of the same name (names are shared
    across the catalogue's models)."""
    if entry is not None and label.name in entry.segments:
        return entry.label_defaults(label)
    for candidate in load_catalog():
        if not candidate.deprecated and label.name in candidate.segments:
            return candidate.label_defaults(label)
    return label


@lru_cache(maxsize=1)
def load_catalog() -> tuple[CatalogEntry, ...]:
    """All catalogue entries, current versions first for each model name."""
    path = configs_dir() / "auto3dseg_models.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read the model catalogue {path}: {exc}") from exc
    known = known_sha256()
    return tuple(
        CatalogEntry(
            id=m["id"], name=m["name"], version=m["version"], title=m["title"], url=m["url"],
            sha256=m.get("sha256") or known.get(m["id"]), license=m.get("license", ""), deprecated=bool(m.get("deprecated")),
            quick=bool(m.get("quick")), reference_cpu_seconds=m.get("reference_cpu_seconds"),
            segments={s["name"]: s for s in m.get("segments", [])},
        )
        for m in data["models"]
    )


def known_sha256() -> dict[str, str]:
    """Known SHA-256 digests of model zips (``configs/auto3dseg_model_sha256.json``), by model id."""
    path = configs_dir() / "auto3dseg_model_sha256.json"
    try:
        table = json.loads(path.read_text())["sha256"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise ModelError(f"cannot read the table of known model hashes {path}: {exc}") from exc
    return {str(k): str(v).lower() for k, v in table.items()}


def find_entry(model: str) -> CatalogEntry:
    """Catalogue entry for a model id (``abdominal-organs-v2.0.0``) or name (current version).

    Raises:
        ModelError: unknown model, listing the known names.
    """
    entries = load_catalog()
    for entry in entries:
        if entry.id == model:
            return entry
    current = [e for e in entries if e.name == model and not e.deprecated]
    if current:
        return current[0]
    names = ", ".join(sorted({e.name for e in entries}))
    raise ModelError(f"unknown model {model!r}; catalogue models: {names}")
