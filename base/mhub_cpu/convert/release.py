"""Pre-converted IRs from a release: a ``manifest.json`` beside the IR files it lists, each with its SHA-256.

Converting a checkpoint needs PyTorch and MONAI (about 2 GB); a release lets an install without them
run any model that was converted for it. Where the IR of a model is not cached, the engine looks in
each release source in turn (:func:`release_sources`): the release packaged with the engine (the demo
model), then ``$MHUB_CPU_RELEASE_URL`` (default :data:`DEFAULT_RELEASE_URL`, the project's GitHub
release) unless ``$MHUB_CPU_NO_DOWNLOAD`` is set. An entry fits when its checkpoint SHA-256, IR format
and calibration match the model's and it was converted with the same OpenVINO major version; every
file is checked against its size and SHA-256 while it is read, and a file that does not match is
refused (the next source, or a local conversion, follows: never a network other than the one named).

The manifest is parsed against a closed schema (:func:`parse_manifest`): unknown keys, file names
other than the IR's own, asset names with a path and sizes above :data:`MAX_ASSET_BYTES` are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mhub_cpu.core.errors import ModelError
from mhub_cpu.core.progress import log

#: What a manifest says it is (the only format this engine reads).
MANIFEST_FORMAT = "mhub-cpu-release/1"
MANIFEST = "manifest.json"
#: Where the project publishes its releases (``$MHUB_CPU_RELEASE_URL`` overrides it).
DEFAULT_RELEASE_URL = "https://github.com/mhub-cpu/mhub-cpu/releases/latest/download/"
#: The files an IR folder may receive from a release (``release.json``: the model's sidecar).
IR_FILES = ("model.xml", "model.bin", "model_config.json", "release.json")
REQUIRED_FILES = ("model.xml", "model.bin", "model_config.json")
#: No single asset is larger (the largest catalogue IR, whole body in fp32, is about 90 MB).
MAX_ASSET_BYTES = 2 << 30
#: A manifest is small; a larger one is refused before it is parsed.
MAX_MANIFEST_BYTES = 16 << 20
IR_FORMATS = ("fp32", "fp16", "int8")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ASSET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Asset:
    """One file of a release: its name beside the manifest, its SHA-256 and its size in bytes."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ReleaseEntry:
    """One pre-converted IR: the model it was converted from, its format and its files by IR file name."""

    model_id: str
    checkpoint_sha256: str
    ir: str
    quantizer_id: str
    openvino: str
    files: dict[str, Asset]


def _require(condition: bool, where: str, what: str) -> None:
    if not condition:
        raise ModelError(f"release manifest {where}: {what}")


def _closed(value: Any, keys: set[str], where: str) -> dict:
    _require(isinstance(value, dict), where, "must be an object")
    unknown = sorted(set(value) - keys)
    missing = sorted(keys - set(value))
    _require(not unknown, where, f"unknown key(s) {', '.join(unknown)}")
    _require(not missing, where, f"missing key(s) {', '.join(missing)}")
    return value


def parse_manifest(data: bytes, source: str) -> list[ReleaseEntry]:
    """The entries of a manifest, checked against the closed schema.

    Raises:
        ModelError: not JSON, another format, or any key, name, digest or size outside the schema.
    """
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"release manifest {source} is not JSON: {exc}") from exc
    _closed(document, {"format", "engine", "models"}, source)
    _require(document["format"] == MANIFEST_FORMAT, source, f"format {document['format']!r}, this engine reads {MANIFEST_FORMAT}")
    _require(isinstance(document["engine"], str), source, "engine must be a string")
    _require(isinstance(document["models"], list), source, "models must be a list")
    entries = []
    for index, raw in enumerate(document["models"]):
        where = f"{source} models[{index}]"
        _closed(raw, {"model_id", "checkpoint_sha256", "ir", "quantizer_id", "openvino", "files"}, where)
        _require(isinstance(raw["model_id"], str) and bool(_ASSET.fullmatch(raw["model_id"])), where, "model_id must be a plain name")
        _require(isinstance(raw["checkpoint_sha256"], str) and bool(_HEX64.fullmatch(raw["checkpoint_sha256"])), where,
                 "checkpoint_sha256 must be 64 lower-case hex digits")
        _require(raw["ir"] in IR_FORMATS, where, f"ir must be one of {', '.join(IR_FORMATS)}")
        _require(isinstance(raw["quantizer_id"], str) and re.fullmatch(r"[0-9a-f]{0,64}", raw["quantizer_id"]) is not None, where,
                 "quantizer_id must be hex digits or empty")
        _require(isinstance(raw["openvino"], str) and bool(re.fullmatch(r"\d{4}\.\d+[0-9A-Za-z.+/_-]*", raw["openvino"])), where,
                 "openvino must be a version such as 2026.4.1")
        files = raw["files"]
        _require(isinstance(files, dict), where, "files must be an object")
        _require(set(files) <= set(IR_FILES), where, f"files may only name {', '.join(IR_FILES)}, not {sorted(set(files) - set(IR_FILES))}")
        _require(set(REQUIRED_FILES) <= set(files), where, f"files must hold {', '.join(REQUIRED_FILES)}")
        assets = {}
        for name, asset in files.items():
            here = f"{where} files.{name}"
            _closed(asset, {"asset", "sha256", "size"}, here)
            _require(isinstance(asset["asset"], str) and bool(_ASSET.fullmatch(asset["asset"])), here, "asset must be a file name without a path")
            _require(isinstance(asset["sha256"], str) and bool(_HEX64.fullmatch(asset["sha256"])), here, "sha256 must be 64 lower-case hex digits")
            size = asset["size"]
            _require(isinstance(size, int) and not isinstance(size, bool) and 0 < size <= MAX_ASSET_BYTES, here,
                     f"size must be 1 to {MAX_ASSET_BYTES} bytes, got {size!r}")
            assets[name] = Asset(asset["asset"], asset["sha256"], size)
        entries.append(ReleaseEntry(raw["model_id"], raw["checkpoint_sha256"], raw["ir"], raw["quantizer_id"], raw["openvino"], assets))
    return entries


def packaged_release() -> Path:
    """The release shipped inside the package (the demo model's IR)."""
    import importlib.resources

    return Path(str(importlib.resources.files("mhub_cpu._data"))) / "release"


def _set(variable: str) -> bool:
    return os.environ.get(variable, "0") not in ("", "0")


def release_sources() -> list[str]:
    """Where IRs are looked for, in order: the packaged release, then the download URL (unless
    ``$MHUB_CPU_NO_DOWNLOAD`` is set to anything but ``0``). ``$MHUB_CPU_NO_RELEASE`` turns off
    both: every IR is converted here (the release builder's own setting)."""
    if _set("MHUB_CPU_NO_RELEASE"):
        return []
    sources = [str(packaged_release())] if (packaged_release() / MANIFEST).is_file() else []
    if not _set("MHUB_CPU_NO_DOWNLOAD"):
        sources.append(os.environ.get("MHUB_CPU_RELEASE_URL") or DEFAULT_RELEASE_URL)
    return sources


def _is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme in ("http", "https", "file")


def _open(source: str, name: str) -> Any:
    """A binary stream of ``name`` in ``source`` (a folder or an http(s)/file URL)."""
    if _is_url(source):
        return urllib.request.urlopen(urllib.parse.urljoin(source.rstrip("/") + "/", name), timeout=_TIMEOUT_S)
    return open(Path(source) / name, "rb")


def _read_manifest(source: str) -> list[ReleaseEntry]:
    with _open(source, MANIFEST) as stream:
        data = stream.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ModelError(f"release manifest {source}: larger than {MAX_MANIFEST_BYTES} bytes")
    return parse_manifest(data, source)


def _copy_checked(source: str, asset: Asset, target: Path) -> None:
    """Copy one asset to ``target``, refusing it as soon as it exceeds its size or when its digest differs."""
    digest = hashlib.sha256()
    done = 0
    try:
        with _open(source, asset.name) as stream, open(target, "wb") as out:
            while chunk := stream.read(1 << 20):
                done += len(chunk)
                if done > asset.size:
                    raise ModelError(f"{asset.name} from {source} is larger than the {asset.size} bytes its manifest states")
                digest.update(chunk)
                out.write(chunk)
    except (OSError, urllib.error.URLError, TimeoutError) as exc:
        raise ModelError(f"cannot read {asset.name} from {source}: {getattr(exc, 'reason', None) or exc}") from exc
    if done != asset.size or digest.hexdigest() != asset.sha256:
        raise ModelError(f"{asset.name} from {source} does not match its manifest (sha256 {digest.hexdigest()[:12]}…, "
                         f"{done} bytes; stated {asset.sha256[:12]}…, {asset.size} bytes)")


def fetch_ir(model_id: str, checkpoint_sha256: str, ir: str, quantizer_id: str, staging: Path) -> tuple[bool, list[str]]:
    """Fill ``staging`` with a released IR of this model, format and calibration, if any source has one.

    Returns whether it did, and the reasons each source did not serve one. Nothing is left in
    ``staging`` from a source that failed half-way.
    """
    import openvino

    major = openvino.__version__.split(".")[0]
    sources = release_sources()
    reasons = [] if sources else ["no release to look in (MHUB_CPU_NO_RELEASE, or no packaged release and no download)"]
    for source in sources:
        try:
            entries = _read_manifest(source)
        except (OSError, urllib.error.URLError, TimeoutError) as exc:
            reasons.append(f"{source}: no manifest ({getattr(exc, 'reason', exc)})")
            continue
        except ModelError as exc:
            reasons.append(str(exc))
            continue
        fits = [e for e in entries if (e.checkpoint_sha256, e.ir, e.quantizer_id) == (checkpoint_sha256, ir, quantizer_id)]
        if not fits:
            reasons.append(f"{source}: no {ir} IR of checkpoint {checkpoint_sha256[:12]}…")
            continue
        entry = fits[0]
        if entry.openvino.split(".")[0] != major:
            reasons.append(f"{source}: its {ir} IR of {model_id} was converted with OpenVINO {entry.openvino}, "
                           f"this is {openvino.__version__} (another major version)")
            continue
        try:
            for name, asset in entry.files.items():
                _copy_checked(source, asset, staging / name)
        except ModelError as exc:
            for name in entry.files:
                (staging / name).unlink(missing_ok=True)
            log(f"warning: refused the released IR: {exc}")
            reasons.append(str(exc))
            continue
        log(f"{ir} IR of {model_id} from the release at {source} (OpenVINO {entry.openvino}, every SHA-256 checked)")
        return True, reasons
    return False, reasons

