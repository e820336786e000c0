"""Release builder (``make release``): pre-converted IRs of each model, verified, with a manifest.

For each model and IR format: convert (and for int8 quantise on the engine's calibration CT), run
``mhub-cpu verify`` against the checkpoint through MONAI (unless ``--no-verify``), and write the IR
files as release assets, a sidecar per model and format (checkpoint SHA-256, IR SHA-256s, OpenVINO
version, precision, verify figures, calibration), and one ``manifest.json`` listing every asset with
its SHA-256 and size, which the engine's :mod:`mhub_cpu.convert.release` reads.

    PYTHONPATH=dev python -m mhub_cpu_dev.release --model demo --formats fp32 fp16 int8 --output output/release
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from mhub_cpu import __version__
from mhub_cpu.auto3dseg.bundle import ModelBundle
from mhub_cpu.convert.auto3dseg import CONFIG_JSON
from mhub_cpu.convert.ir_cache import IR_XML
from mhub_cpu.convert.release import MANIFEST, MANIFEST_FORMAT
from mhub_cpu.core.resources import calibration_images
from mhub_cpu.runtime.precision import CpuCapabilities, IrFormat, Precision
from mhub_cpu.segment.calibration import make_quantizer
from mhub_cpu.segment.model import prepare_network, resolve_bundle
from mhub_cpu.segment.verify import verify_model

#: The precision verify checks for each IR format (bf16 runs the fp32 IR, so it is verified with it).
VERIFIED = {IrFormat.FP32: [Precision.F32], IrFormat.FP16: [Precision.FP16], IrFormat.INT8: [Precision.INT8]}


def _asset(path: Path, name: str, output: Path) -> dict:
    if path != output / name:
        shutil.copyfile(path, output / name)
    data = path.read_bytes()
    return {"asset": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def release_model(bundle: ModelBundle, ir: IrFormat, output: Path, verify: bool) -> dict:
    """Convert one model to one IR format and write its assets and sidecar; its manifest entry."""
    import openvino

    precision = VERIFIED[ir][0]
    converted = prepare_network(bundle, precision)
    quantizer_id = make_quantizer(calibration_images())[1] if ir is IrFormat.INT8 else ""
    stem = f"{bundle.model_id}-{ir}-{bundle.checkpoint_sha256[:12]}"
    folder = converted.xml_path.parent
    files = {
        IR_XML: _asset(folder / IR_XML, f"{stem}.xml", output),
        "model.bin": _asset(folder / "model.bin", f"{stem}.bin", output),
        CONFIG_JSON: _asset(folder / CONFIG_JSON, f"{stem}.config.json", output),
    }
    sidecar = {
        "model_id": bundle.model_id, "checkpoint_sha256": bundle.checkpoint_sha256, "source_sha256": bundle.source_sha256,
        "ir": ir.value, "precision": precision.value, "openvino": openvino.__version__, "engine": __version__,
        "ir_sha256": {name: asset["sha256"] for name, asset in files.items()},
        "calibration": [p.name for p in calibration_images()] if ir is IrFormat.INT8 else [],
        "verify": verify_model(bundle, VERIFIED[ir]) if verify else None, "verified_on": CpuCapabilities.query().to_json(),
    }
    (output / f"{stem}.release.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    files["release.json"] = _asset(output / f"{stem}.release.json", f"{stem}.release.json", output)
    return {"model_id": bundle.model_id, "checkpoint_sha256": bundle.checkpoint_sha256, "ir": ir.value,
            "quantizer_id": quantizer_id, "openvino": openvino.__version__, "files": files}


def build_release(models: list[str], formats: list[IrFormat], output: Path, verify: bool = True) -> Path:
    """Write the release into ``output`` (assets first, ``manifest.json`` last); the manifest's path."""
    output.mkdir(parents=True, exist_ok=True)
    entries = [release_model(resolve_bundle(model), ir, output, verify) for model in models for ir in formats]
    manifest = output / MANIFEST
    manifest.write_text(json.dumps({"format": MANIFEST_FORMAT, "engine": __version__, "models": entries}, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="demo, a catalogue id or a model zip (repeatable)")
    parser.add_argument("--formats", nargs="+", choices=[f.value for f in IrFormat], default=[f.value for f in IrFormat])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--no-verify", action="store_true", help="skip mhub-cpu verify (the sidecar's verify is then null)")
    args = parser.parse_args(argv)
    # Converted here, in a cache of its own: never an IR that came from a release or another cache.
    os.environ["MHUB_CPU_NO_RELEASE"] = "1"
    os.environ["MHUB_CPU_CACHE"] = cache = tempfile.mkdtemp(prefix="mhub-cpu-release-cache-")
    try:
        manifest = build_release(args.model, [IrFormat(f) for f in args.formats], args.output, verify=not args.no_verify)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
