"""Benchmark against bpreg's own ``InferenceModel`` on a 512x512xN CT built from the sample CT.

Each contender runs in its own Python process (so that peak RSS is its own): bpreg 1.1.0
``nifti2json`` (torch, f32, 2 threads as the machine has) and ours in each mode: faithful
(OpenVINO f32, every slice), fast (f32, one slice every 2.5 mm, interpolated), bf16 and
bf16-fast (bf16 compute; only on CPUs with native bf16), int8 (NNCF INT8, every slice) and
int8-fast. Same weights for all: random convolutions in the public layout with a read-out fitted to slice height on the sample CT (``mhub_cpu_dev.standins.bodypart.fitted_readout``), so that scores
span the landmark scale as a trained model's do. IR conversion and INT8 quantisation are one-off
and not timed. Scores are compared with bpreg's and with our faithful run. Writes
``bodypart.json`` and ``bodypart.md`` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import zoom

from mhub_cpu.core.files import strict, write_atomic, write_json
from mhub_cpu.core.progress import log, peak_rss_mb
from mhub_cpu.runtime.precision import Compute, CpuCapabilities, Precision
from mhub_cpu_dev.data import SAMPLE_NIFTI

SOURCE_CT = SAMPLE_NIFTI
MODES = {
    "faithful": (Precision.F32, False), "fast": (Precision.F32, True), "bf16": (Precision.BF16, False),
    "bf16-fast": (Precision.BF16, True), "int8": (Precision.INT8, False), "int8-fast": (Precision.INT8, True),
}
CONTENDERS = ("bpreg", *MODES)
COMPARED_FLAGS = ("body part examined tag", "reverse z-ordering", "valid z-spacing")


def build_volume(path: Path, n_slices: int, size: int = 512) -> Path:
    """Resample the sample CT (3 mm) to size x size x n_slices, int16 HU, same field of view."""
    if path.exists():
        return path
    log(f"building {size}x{size}x{n_slices} benchmark volume {path}")
    image = nib.load(SOURCE_CT)
    data = np.asanyarray(image.dataobj).astype(np.float32)
    factors = (size / data.shape[0], size / data.shape[1], n_slices / data.shape[2])
    volume = np.empty((size, size, n_slices), dtype=np.int16)
    z_source = (np.arange(n_slices) + 0.5) / factors[2] - 0.5
    for k, z in enumerate(np.clip(z_source, 0, data.shape[2] - 1)):
        low = int(np.floor(z))
        high = min(low + 1, data.shape[2] - 1)
        plane = data[:, :, low] * (1 - (z - low)) + data[:, :, high] * (z - low)
        volume[:, :, k] = np.round(zoom(plane, factors[:2], order=1))
    affine = image.affine @ np.diag([1 / factors[0], 1 / factors[1], 1 / factors[2], 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, affine), path)
    return path


def prepare_model(model_dir: Path, volume: Path) -> Path:
    """Random weights with a fitted read-out; look-up table spread over the sample CT's raw scores."""
    if (model_dir / "inference-settings.json").exists():
        return model_dir
    from mhub_cpu.bodypart.model import ScoreModel
    from mhub_cpu.bodypart.modelfiles import open_model_dir
    from mhub_cpu.bodypart.preprocess import prepare_slices
    from mhub_cpu_dev.standins.bodypart import fitted_readout, random_state_dict, write_model_dir

    slices = prepare_slices(nib.load(SOURCE_CT)).slices
    state = fitted_readout(random_state_dict(seed=3), slices)
    write_model_dir(model_dir, state)
    raw = ScoreModel(open_model_dir(model_dir)).predict(slices)
    low, high = float(raw[:10].mean()), float(raw[-10:].mean())
    write_model_dir(model_dir, state, raw_low=low, raw_high=high, slope_mean=100 / (len(raw) * 3.0))
    return model_dir


def child(which: str, volume: Path, model_dir: Path, result_path: Path) -> None:
    """Run one contender in this process; write its bpreg-style JSON, wall time and peak RSS."""
    start = time.perf_counter()
    if which == "bpreg":
        from mhub_cpu_dev.reference.bpreg import import_inference_model

        model = import_inference_model()(str(model_dir) + "/", gpu=False)
        result = model.nifti2json(str(volume))
    else:
        from mhub_cpu.bodypart.model import ScoreModel
        from mhub_cpu.bodypart.modelfiles import open_model_dir
        from mhub_cpu.bodypart.outputs import bpreg_result
        from mhub_cpu.bodypart.pipeline import Options, score_volume
        from mhub_cpu.core.progress import StageTimer
        from mhub_cpu.dicomio.nifti import load_nifti

        precision, fast = MODES[which]
        model = open_model_dir(model_dir)
        scorer = ScoreModel(model, precision)
        curve = score_volume(load_nifti(volume), model, scorer, Options(precision=precision, fast=fast), StageTimer())
        result = bpreg_result(curve, model.settings)
    seconds = time.perf_counter() - start
    write_json(result_path, {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "result": result})


def run_benchmark(output_dir: Path, model: str | None, n_slices: int) -> int:
    """Run all contenders side by side; write bodypart.json and bodypart.md."""
    output_dir = Path(output_dir)
    volume = build_volume(output_dir / "work" / f"ct_512x512x{n_slices}.nii.gz", n_slices)
    model_dir = Path(model) if model else prepare_model(output_dir / "work" / "model", volume)
    from mhub_cpu.bodypart.model import ir_path
    from mhub_cpu.bodypart.modelfiles import open_model_dir

    for precision in (Precision.F32, Precision.INT8):  # IR conversion and quantisation are one-offs, not timed
        ir_path(open_model_dir(model_dir), precision)
    runs = {}
    capabilities = CpuCapabilities.query()
    for which in CONTENDERS:
        if which != "bpreg" and MODES[which][0] is Precision.BF16 and not capabilities.supports(Compute.BF16):
            log(f"{which}: not run, this CPU has no native bf16")
            continue
        result_path = output_dir / "work" / f"{which}.json"
        log(f"running {which} ...")
        subprocess.run(
            [sys.executable, "-m", "mhub_cpu_dev.bench.bodypart", which, str(volume), str(model_dir), str(result_path)],
            check=True,
        )
        runs[which] = json.loads(result_path.read_text())
        log(f"{which}: {runs[which]['seconds']:.1f} s, peak RSS {runs[which]['peak_rss_mb']:.0f} MiB")
    summary = summarize(runs, n_slices)
    write_json(output_dir / "bodypart.json", summary)
    write_atomic(output_dir / "bodypart.md", markdown(summary).encode())
    print(markdown(summary))
    return 0


def _scores(result: dict, key: str) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in result[key]], dtype=float)


def compare(result: dict, reference: dict) -> dict:
    """Max |score difference| (cleaned, unprocessed) and whether tag and flags agree."""
    row: dict = {}
    for key in ("cleaned slice scores", "unprocessed slice scores"):
        diff = np.abs(_scores(result, key) - _scores(reference, key))
        row[f"max_abs_diff {key}"] = float(np.nanmax(diff)) if np.isfinite(diff).any() else None
    row["same_tag_and_flags"] = all(strict(result[k]) == strict(reference[k]) for k in COMPARED_FLAGS)
    return row


def summarize(runs: dict, n_slices: int) -> dict:
    reference = runs["bpreg"]
    rows = {}
    for which, run in runs.items():
        row = {"seconds": run["seconds"], "peak_rss_mb": run["peak_rss_mb"], "speedup": reference["seconds"] / run["seconds"]}
        if which != "bpreg":
            row["vs_bpreg"] = compare(run["result"], reference["result"])
            row["vs_faithful"] = compare(run["result"], runs["faithful"]["result"])
        row["tag"] = run["result"]["body part examined tag"]
        rows[which] = row
    return {
        "volume": f"512x512x{n_slices} int16 NIfTI (gz), resampled from abdomen_3mm.nii.gz",
        "weights": "random convolutions (seed 3), read-out fitted to slice height on abdomen_3mm.nii.gz",
        "machine": CpuCapabilities.query().describe(),
        "runs": rows,
    }


def markdown(summary: dict) -> str:
    lines = [
        f"Body part regression benchmark: {summary['volume']}; weights: {summary['weights']}.",
        f"Machine: {summary.get('machine', 'not recorded')}, {os.cpu_count()} cores. Peak RSS: each run's own "
        "high-water mark (VmHWM), reported by the run's process itself.",
        "",
        "| run | time (s) | speed-up vs bpreg | peak RSS (MiB) | tag | vs bpreg: same tag/flags | max abs diff cleaned "
        "| max abs diff unprocessed | vs faithful: same tag/flags | max abs diff cleaned | max abs diff unprocessed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cells(row: dict | None) -> str:
        if row is None:
            return "- | - | -"
        fmt = lambda v: "-" if v is None else f"{v:.2g}"  # noqa: E731
        return (
            f"{row['same_tag_and_flags']} | {fmt(row['max_abs_diff cleaned slice scores'])} | "
            f"{fmt(row['max_abs_diff unprocessed slice scores'])}"
        )

    for which, row in summary["runs"].items():
        lines.append(
            f"| {which} | {row['seconds']:.1f} | {row['speedup']:.1f}x | {row['peak_rss_mb']:.0f} | {row['tag']} | "
            f"{cells(row.get('vs_bpreg'))} | {cells(row.get('vs_faithful'))} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """``python -m mhub_cpu_dev.bench.bodypart [--output DIR] [--model DIR] [--slices N]``; or, as the
    benchmark's child process, ``CONTENDER VOLUME MODEL_DIR RESULT``."""
    if argv and argv[0] in CONTENDERS:
        child(argv[0], Path(argv[1]), Path(argv[2]), Path(argv[3]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m mhub_cpu_dev.bench.bodypart", description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("output/bench"), help="folder for bodypart.json and bodypart.md")
    parser.add_argument("--model", default=None, help="model directory (default: random weights in the public layout)")
    parser.add_argument("--slices", type=int, default=600, help="number of slices of the synthetic 512x512 volume")
    args = parser.parse_args(argv)
    return run_benchmark(args.output, args.model, args.slices)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
