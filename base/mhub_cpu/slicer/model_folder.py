"""The OpenVINO IR beside ``model.pt`` in a MONAIAuto3DSeg model folder.

The open OpenVINO pull request of the extension (lassoan/SlicerMONAIAuto3DSeg#72) looks for
``model.xml`` next to ``model.pt``; ``mhub-cpu convert --model-file DIR/model.pt`` writes it there,
with ``model.bin`` and a sidecar, ``model.openvino.json``, that says what the IR is: the SHA-256 of
the checkpoint it came from, of both IR files, the IR format and the runtime settings (the
checkpoint's ``config`` subset inference needs). With a sidecar that matches, inference needs
neither torch nor the cache; anything else beside ``model.pt`` (an IR from another converter, one
of another checkpoint or format, a half-copied one) is not used, and the model is converted
through the normal cache instead (:func:`mhub_cpu.segment.model.prepare_network`, needs torch).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from mhub_cpu import __version__
from mhub_cpu.auto3dseg.bundle import ModelBundle
from mhub_cpu.convert.auto3dseg import CACHE_FORMAT, ConvertedModel, check_supported
from mhub_cpu.core.cache import sha256_of
from mhub_cpu.core.errors import ModelError
from mhub_cpu.core.files import write_json
from mhub_cpu.core.progress import log
from mhub_cpu.runtime.precision import IrFormat, Precision
from mhub_cpu.segment.model import prepare_network, resolve_model_file

#: Suffix of the sidecar beside ``model.pt`` (``model.openvino.json``).
SIDECAR_SUFFIX = ".openvino.json"


def ir_paths(model_file: Path) -> tuple[Path, Path, Path]:
    """``model.xml``, ``model.bin`` and the sidecar for ``DIR/model.pt`` (the names the pull request uses)."""
    model_file = Path(model_file)
    return model_file.with_suffix(".xml"), model_file.with_suffix(".bin"), model_file.with_suffix(SIDECAR_SUFFIX)


def ir_beside(bundle: ModelBundle, model_file: Path, precision: Precision) -> ConvertedModel | None:
    """The IR beside ``model_file`` when its sidecar says it is this checkpoint's in ``precision``'s
    format (and both IR files are the ones it names); else ``None``, with the reason logged."""
    xml, binary, sidecar = ir_paths(model_file)
    if not sidecar.is_file():
        if xml.exists():
            log(f"{xml.name} beside {model_file.name} has no {sidecar.name} (not written by mhub-cpu convert "
                "--model-file), so its settings are unknown: not used")
        return None
    try:
        record = json.loads(sidecar.read_text())
        stale = _mismatch(record, bundle, precision, xml, binary)
        config = dict(record["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log(f"{sidecar} cannot be read ({type(exc).__name__}: {exc}): the IR beside {model_file.name} is not used")
        return None
    if stale:
        log(f"the IR beside {model_file.name} is not used: {stale}")
        return None
    check_supported(config)
    log(f"using the OpenVINO IR beside {model_file.name}: {xml} ({record['ir']}, written by mhub-cpu {record['mhub_cpu']})")
    return ConvertedModel(xml, config, IrFormat(record["ir"]))


def _mismatch(record: dict[str, Any], bundle: ModelBundle, precision: Precision, xml: Path, binary: Path) -> str:
    """Why the sidecar's IR is not the one to run, or ``""`` when it is."""
    if record["format"] != CACHE_FORMAT:
        return f"its sidecar has format {record['format']}, this mhub-cpu writes {CACHE_FORMAT}"
    if record["checkpoint_sha256"] != bundle.checkpoint_sha256:
        return "it was converted from another checkpoint (model.pt changed since)"
    if record["ir"] != precision.ir.value:
        return f"it is {record['ir']}, --precision {precision} needs the {precision.ir} IR"
    for path, key in ((xml, "xml_sha256"), (binary, "bin_sha256")):
        if not path.is_file():
            return f"{path.name} is missing"
        if sha256_of(path) != record[key]:
            return f"{path.name} is not the file its sidecar names (changed or half-copied)"
    return ""


def convert_model_file(model_file: Path, precision: Precision, calibration: tuple[Path, ...] = (), trust_model: bool = False) -> dict[str, Any]:
    """``mhub-cpu convert --model-file DIR/model.pt``: convert (through the cache) and put the IR and
    its sidecar beside ``model.pt``; returns what was written.

    The sidecar goes first (removed) and last (written), so at no moment does a sidecar name files
    that are not yet, or no longer, in place.

    Raises:
        ModelError: the checkpoint cannot be converted, or the folder cannot be written.
    """
    import openvino

    model_file = Path(model_file)
    bundle = resolve_model_file(model_file)
    converted = prepare_network(bundle, precision, calibration, trust_model)
    xml, binary, sidecar = ir_paths(model_file)
    record = {
        "format": CACHE_FORMAT, "mhub_cpu": __version__, "openvino": openvino.__version__,
        "checkpoint_sha256": bundle.checkpoint_sha256, "ir": converted.ir.value,
        "xml_sha256": sha256_of(converted.xml_path), "bin_sha256": sha256_of(converted.xml_path.with_suffix(".bin")),
        "config": converted.config,
    }
    try:
        sidecar.unlink(missing_ok=True)
        _copy_atomic(converted.xml_path, xml)
        _copy_atomic(converted.xml_path.with_suffix(".bin"), binary)
        write_json(sidecar, record)
    except OSError as exc:
        raise ModelError(f"cannot write the OpenVINO IR beside {model_file}: {exc.strerror or exc}") from exc
    log(f"wrote {xml}, {binary.name} and {sidecar.name} ({converted.ir}) beside {model_file.name}")
    return {"model": bundle.model_id, "model_file": str(model_file), "checkpoint_sha256": bundle.checkpoint_sha256,
            "ir": converted.ir.value, "xml": str(xml), "bin": str(binary), "sidecar": str(sidecar), "config": converted.config}


def _copy_atomic(source: Path, target: Path) -> None:
    """Copy to a temporary name beside ``target`` and rename it into place (a large IR is never held in memory)."""
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
