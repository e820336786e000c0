"""Class-head benchmark (``make bench-head``): a whole-body network at Slicer's window, its class head
inside OpenVINO against split off (``runtime/head.py``), on the sample CT.

The network is the 118-output whole-body 3 mm architecture with fixed-seed random weights
(``standins.auto3dseg.write_random_model``; the real weights cannot be downloaded here), run at its
own window (224×224×144, dense placement, overlap 0.625, as Slicer) over the sample CT. Each mode
runs in its own process, so peak RSS (VmHWM) is its own; the labels of both are compared voxel by
voxel. Writes ``class_head.json`` and ``class_head.md`` to the output folder.

    PYTHONPATH=dev python -m mhub_cpu_dev.bench.class_head --output output/bench
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODES = ("inside", "split")


def run_mode(mode: str, model_zip: Path, labels_out: Path) -> dict:
    """One mode, in this process: the sliding window over the sample CT; its figures."""
    from mhub_cpu.auto3dseg.bundle import load_bundle
    from mhub_cpu.core.resources import sample_nifti
    from mhub_cpu.dicomio.nifti import load_nifti
    from mhub_cpu.runtime.network import Network
    from mhub_cpu.runtime.precision import Precision
    from mhub_cpu.segment.inferer import sliding_window_labels
    from mhub_cpu.segment.model import prepare_network
    from mhub_cpu.segment.preprocess import model_orientation, prepare
    from mhub_cpu.segment.splitter import WindowStrategy, make_plan
    from mhub_cpu.segment.weights import BlendMode

    model = prepare_network(load_bundle(str(model_zip)), Precision.F32)
    config = model.config
    prepared = prepare(model_orientation(load_nifti(sample_nifti()), config), config)
    roi = tuple(int(v) for v in config["roi_size"])
    plan = make_plan(prepared.image.shape, roi, WindowStrategy.DENSE, 0.625, int(config["size_divisor"]))  # type: ignore[arg-type]
    network = Network(model.xml_path, Precision.F32, input_shape=(1, 1, *plan.window), split_head=mode == "split")
    start, cpu = time.perf_counter(), time.process_time()
    labels, windows = sliding_window_labels(prepared.image, lambda w: network(w[None, None])[0], plan,
                                            int(config["output_classes"]), BlendMode.GAUSSIAN, head=network.head)
    np.save(labels_out, labels)
    return {"mode": mode, "classes": int(config["output_classes"]), "grid": list(prepared.image.shape), "window": list(plan.window),
            "windows": windows, "wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(time.process_time() - cpu, 1),
            "vmhwm_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one mode, in a child process
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    model_zip = args.output / "whole-body-3mm-standin.zip"
    if args.mode:
        print(json.dumps(run_mode(args.mode, model_zip, args.output / f"class_head-{args.mode}.npy")))
        return 0
    from mhub_cpu.runtime.precision import CpuCapabilities
    from mhub_cpu_dev.standins.auto3dseg import write_random_model

    write_random_model(model_zip, "whole-body-3mm-v2.0.0", [], 3.0)
    rows = []
    for mode in MODES:
        child = subprocess.run([sys.executable, "-m", "mhub_cpu_dev.bench.class_head", "--output", str(args.output), "--mode", mode],
                               capture_output=True, text=True, check=True)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    inside, split = (np.load(args.output / f"class_head-{mode}.npy") for mode in MODES)
    differing = int(np.count_nonzero(inside != split))
    cpu = CpuCapabilities.query()
    result = {"cpu": cpu.to_json(), "rows": rows, "voxels": int(inside.size), "voxels_differing": differing,
              "labels_present": int(len(np.unique(inside)))}
    (args.output / "class_head.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Class head inside OpenVINO vs split off; {cpu.describe()}", "",
             "| class head | classes | window × count | wall s | CPU s | VmHWM MiB |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['classes']} | {'×'.join(map(str, r['window']))} × {r['windows']} | {r['wall_s']} | {r['cpu_s']} | "
              f"{r['vmhwm_mib']} |" for r in rows]
    lines += ["", f"{differing} of {inside.size} voxels differ ({result['labels_present']} labels present)."]
    (args.output / "class_head.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
