"""The cache of converted OpenVINO IRs: one folder per model and settings, written once, atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mhub_cpu.core.cache import cache_dir

#: Name of the IR inside each cache folder (``model.xml`` / ``model.bin``).
IR_XML = "model.xml"


def ir_root() -> Path:
    """Where converted IRs are cached: ``cache_dir()/openvino``."""
    return cache_dir() / "openvino"


def cache_key(*parts: object) -> str:
    """A short hash of everything a cached IR depends on (checkpoint hash, format, versions, settings)."""
    return hashlib.sha256("|".join(str(part) for part in parts).encode()).hexdigest()[:24]


def cached_ir(name: str, build: Callable[[Path], None], required: tuple[str, ...] = (IR_XML,)) -> Path:
    """The cache folder ``ir_root()/name``, built by ``build(staging_folder)`` on first use.

    ``build`` writes every file of ``required`` (and anything else) into a staging folder beside the
    target, which is renamed into place only when complete, so an interrupted conversion never
    looks cached. When a concurrent conversion finished first, its folder is kept.
    """
    target = ir_root() / name
    if all((target / file).exists() for file in required):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        build(staging)
        missing = [file for file in required if not (staging / file).exists()]
        if missing:
            raise RuntimeError(f"conversion wrote no {', '.join(missing)}")
        if not target.exists():
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def file_fingerprint(paths: list[Path], *settings: object) -> str:
    """A short hash of files (names and sizes; folders by their files) and settings, e.g. calibration data."""
    entries: list[str] = []
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        entries += [f"{p.name}:{p.stat().st_size}" for p in files]
    return hashlib.sha256("|".join(entries + [str(s) for s in settings]).encode()).hexdigest()[:12]


def agreement_record_path(ir_folder: Path, precision: str) -> Path:
    """The sidecar beside a cached IR holding ``precision``'s measured agreement with f32 (``--precision auto``).

    One per precision: bf16 runs the fp32 IR, so both would otherwise share a folder's sidecar.
    """
    return Path(ir_folder) / f"agreement-{precision}.json"


def read_record(path: Path, key: dict | None = None) -> dict | None:
    """A JSON record (object), or ``None`` where there is none, it cannot be read, or it does not hold
    every item of ``key`` (a record of other settings: measured or written again)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or any(data.get(name) != value for name, value in (key or {}).items()):
        return None
    return data


def write_record(path: Path, record: dict) -> bool:
    """Write a JSON sidecar atomically (a concurrent reader sees the old record or the new, never half of one).

    Returns False where the cache is read-only (e.g. an image's): the record then serves this run only.
    """
    path = Path(path)
    try:
        handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    except OSError:
        return False
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(record, out, indent=2)
            out.write("\n")
        os.replace(staging, path)
    except OSError:
        return False
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return True
