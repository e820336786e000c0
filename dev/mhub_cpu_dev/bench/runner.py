"""Run the benchmark plan and write ``bench.json``, ``bench.md`` and ``bench.png``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from mhub_cpu.core.files import write_json
from mhub_cpu.core.progress import log
from mhub_cpu.core.versions import package_versions
from mhub_cpu.runtime.precision import CpuCapabilities, Precision
from mhub_cpu.segment.job import WRITE_SEG_STAGE
from mhub_cpu_dev.bench.modes import DEFAULT_PLAN, MODES
from mhub_cpu_dev.bench.workloads import Workload, build_workloads

#: Bytes per voxel and class the reference pipeline holds at once at model resolution: the
#: logits and their softmax (float32 each), as MONAI's sliding_window_inference and softmax make them.
REFERENCE_BYTES_PER_VOXEL_CLASS = 8


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def reference_memory_estimate(workload: Workload) -> int | None:
    """Lower bound of the reference's memory for W3-sized inputs (None when not needed)."""
    if workload.name != "W3":
        return None
    shape_at_model_resolution = (320, 240, 400)
    return int(np.prod(shape_at_model_resolution)) * 118 * REFERENCE_BYTES_PER_VOXEL_CLASS


def _run_child(workload: Workload, mode_name: str, out: Path) -> dict:
    """Run one (workload, mode) in a fresh process; return its record."""
    command = [sys.executable, "-m", "mhub_cpu_dev.bench.run_one", str(workload.model), str(workload.input_dir), str(out), mode_name]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (out.parent / f"{out.name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0 or not (out / "report.json").exists():
        return {"status": "failed", "error": (result.stderr.strip().splitlines() or ["?"])[-1]}
    report = json.loads((out / "report.json").read_text())
    return {
        "status": "ok",
        "wall_s": round(wall, 2),
        "job_s": report["total_s"],
        "inference_s": round(sum(report["stages_s"].get(k, 0.0) for k in ("preprocess", "load network", "inference", "restore grid")), 2),
        "cpu_s": report["cpu_s"],
        "peak_rss_mb": report["peak_rss_mb"],
        "windows": report["inference"].get("windows"),
        "stages_s": report["stages_s"],
    }


def _agreement(labels_path: Path, reference_path: Path) -> dict:
    ours = np.asarray(nib.load(labels_path).dataobj)
    reference = np.asarray(nib.load(reference_path).dataobj)
    scores = {}
    for value in np.unique(reference):
        if value == 0:
            continue
        a, b = ours == value, reference == value
        scores[int(value)] = round(2.0 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum()), 4)
    extra = sorted(set(np.unique(ours).tolist()) - set(np.unique(reference).tolist()) - {0})
    if not scores:
        return {"dice_mean_vs_reference": None, "dice_min_vs_reference": None, "dice_per_label": {}, "labels_only_in_ours": extra}
    return {
        "dice_mean_vs_reference": round(float(np.mean(list(scores.values()))), 4),
        "dice_min_vs_reference": round(float(min(scores.values())), 4),
        "dice_per_label": scores,
        "labels_only_in_ours": extra,
    }


def _prepare_irs(workload: Workload, modes: list[str], root: Path) -> None:
    """Convert (and quantise) the IRs a workload needs in a throw-away run, so timed runs hit the cache."""
    for mode_name in modes:
        mode = MODES[mode_name]
        if mode.engine != "openvino":
            continue
        warm = root / "warmup" / f"{workload.name}-{mode.precision}"
        if warm.exists():
            continue
        log(f"{workload.name}: preparing the {mode.precision} IR (not timed)")
        command = [sys.executable, "-m", "mhub_cpu.cli", "convert", "--model", str(workload.model), "--precision", mode.precision]
        if subprocess.run(command).returncode == 0:
            warm.mkdir(parents=True)


def run_bench(output: Path, workloads: list[str], plan: dict[str, list[str]] | None = None) -> list[dict]:
    """Run every (workload, mode) of ``plan`` and write the result files into ``output``."""
    plan = plan or DEFAULT_PLAN
    output.mkdir(parents=True, exist_ok=True)
    records = _kept_records(output / "bench.json", workloads)
    for index, workload in enumerate(build_workloads(output, workloads), start=1):
        modes = plan[workload.name]
        log(f"workload {index}/{len(workloads)}: {workload.name} — {workload.description}")
        _prepare_irs(workload, modes, output)
        runs = output / "runs" / workload.name
        reference_labels = None
        reference_record = None
        for mode_name in modes:
            mode = MODES[mode_name]
            record = {"workload": workload.name, "mode": mode_name, "description": mode.describe()}
            compute = Precision(mode.precision).compute
            if mode.engine == "openvino" and not CpuCapabilities.query().supports(compute):
                record.update(status=f"not run: this CPU has no native {compute}")
                records.append(record)
                log(f"{workload.name}/{mode_name}: {record['status']}")
                continue
            estimate = reference_memory_estimate(workload) if mode.engine == "reference" else None
            if estimate is not None and estimate > 0.8 * _memory_bytes():
                record.update(status="not run: out of memory", reason=(
                    f"MONAI's full-volume logits and softmax need at least {estimate / 2**30:.0f} GiB; "
                    f"this machine has {_memory_bytes() / 2**30:.0f} GiB"))
                records.append(record)
                log(f"{workload.name}/{mode_name}: {record['status']}")
                continue
            log(f"{workload.name}/{mode_name} ...")
            out = runs / mode_name
            record.update(_run_child(workload, mode_name, out))
            if record["status"] == "ok":
                if mode.engine == "reference":
                    reference_labels, reference_record = out / "segmentation.nii.gz", record
                elif reference_labels is not None:
                    record.update(_agreement(out / "segmentation.nii.gz", reference_labels))
                if reference_record is not None:
                    record["speedup_vs_reference"] = round(reference_record["wall_s"] / record["wall_s"], 2)
            log(f"{workload.name}/{mode_name}: {record.get('status')} {record.get('wall_s', '')} s "
                f"peak {record.get('peak_rss_mb', '')} MiB dice mean {record.get('dice_mean_vs_reference', '-')}")
            records.append(record)
            _write_all(output, records)
    _write_all(output, records)
    return records


def _kept_records(path: Path, rerun: list[str]) -> list[dict]:
    """Records of an earlier bench.json for the workloads not run again now."""
    if not path.exists():
        return []
    return [r for r in json.loads(path.read_text())["records"] if r["workload"] not in rerun]


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    capabilities = CpuCapabilities.query()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(_memory_bytes() / 2**30, 1),
        "openvino_capabilities": list(capabilities.openvino), "cpu_flags": list(capabilities.flags),
    }


def _write_all(output: Path, records: list[dict]) -> None:
    write_json(output / "bench.json", {"machine": _machine(), "versions": package_versions(), "records": records})
    (output / "bench.md").write_text(markdown_table(records, _machine()))
    write_chart(records, output / "bench.png")


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def markdown_table(records: list[dict], machine: dict) -> str:
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"OpenVINO capabilities {', '.join(machine.get('openvino_capabilities', []))}; "
        f"CPU flags {', '.join(machine.get('cpu_flags', [])) or 'none of note'}. "
        "Wall = DICOM in → DICOM-SEG out, in a fresh process (IR already converted and cached). "
        "DICOM-SEG s: the SEG writing stage alone. Peak RSS: the run's own high-water mark (VmHWM), reported by the run itself.",
        "",
        "| workload | mode | wall s | inference s | DICOM-SEG s | CPU s | peak RSS MiB | windows | speedup | Dice mean | Dice min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r.get("status") != "ok":
            lines.append(f"| {r['workload']} | {r['mode']} | {r.get('status')} | | | | | | | | |")
            continue
        lines.append(
            f"| {r['workload']} | {r['mode']} | {_fmt(r['wall_s'])} | {_fmt(r['inference_s'])} | {_fmt(r['stages_s'].get(WRITE_SEG_STAGE))} | "
            f"{_fmt(r['cpu_s'])} | "
            f"{_fmt(r['peak_rss_mb'], 0)} | {_fmt(r['windows'])} | {_fmt(r.get('speedup_vs_reference'))}× | "
            f"{_fmt(r.get('dice_mean_vs_reference'), 4)} | {_fmt(r.get('dice_min_vs_reference'), 4)} |"
        )
    notes = [r for r in records if r.get("reason")]
    lines += [""] + [f"- {r['workload']}/{r['mode']}: {r['reason']}" for r in notes]
    return "\n".join(lines) + "\n"


def write_chart(records: list[dict], path: Path) -> None:
    """Bar chart of wall seconds per mode, one group per workload (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return
    workloads = list(dict.fromkeys(r["workload"] for r in ok))
    modes = list(dict.fromkeys(r["mode"] for r in ok))
    figure, axis = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(modes)
    for m, mode in enumerate(modes):
        xs, ys = [], []
        for w, workload in enumerate(workloads):
            match = [r for r in ok if r["workload"] == workload and r["mode"] == mode]
            if match:
                xs.append(w + m * width)
                ys.append(match[0]["wall_s"])
        axis.bar(xs, ys, width, label=mode)
    axis.set_xticks([w + 0.4 - width / 2 for w in range(len(workloads))], workloads)
    axis.set_yscale("log")
    axis.set_ylabel("wall seconds, DICOM in → DICOM-SEG out (log)")
    axis.legend(fontsize=8)
    axis.set_title("mhub-cpu segmentation benchmark")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
