"""``python -m mhub_cpu_dev.bench.batch``: one ``mhub-cpu batch segment`` against separate ``mhub-cpu segment`` commands.

N copies of the sample series (new Study, Series, Frame of Reference and SOP Instance UIDs per
copy) are segmented with the same settings (f32, dense windows) by three contenders: N separate
commands, one after another, each a fresh process that reads its input, compiles the network,
segments and writes; one batch over the folder holding all copies with the default worker plan;
and one batch with a single worker using every core, which runs inference as the separate
commands do. Workloads: D (the demo model) and W2 (the abdominal-organs network as a 3 mm model,
random weights; see ``workloads.py``). ``--repeats`` runs the contenders in rotation and keeps
the fastest run of each, the least disturbed on a shared machine.

Figures, from the wall clock of each command and the per-stage timings each series records:

* series/hour: N × 3600 / wall seconds;
* pure-inference series/hour: the same, were each worker doing nothing but the ``inference``
  stages: N × 3600 / (sum of the series' inference seconds / workers);
* overhead per series: wall seconds / N minus inference seconds / (workers × N): what starting
  processes, reading, compiling, writing and scheduling cost each series;
* peak RSS per worker: the largest per-series peak (VmHWM) a worker reported; for separate
  commands, each command's own.

Writes ``batch.json`` and ``batch.md`` into ``--output`` (work files under ``--output/work/batch``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from mhub_cpu.core.files import write_json
from mhub_cpu.core.progress import log
from mhub_cpu.core.versions import package_versions
from mhub_cpu_dev.bench.runner import _machine
from mhub_cpu_dev.bench.workloads import Workload, build_workloads

COPIES = 6
SETTINGS = ("--precision", "f32", "--windows", "dense")
#: Targets of the issue: the batch's overhead per series at least this many times smaller than the
#: separate commands', and its series/hour within this fraction of its pure-inference series/hour.
OVERHEAD_FACTOR = 3.0
THROUGHPUT_TOLERANCE = 0.10


def mhub_cpu(*args: str) -> list[str]:
    return [sys.executable, "-m", "mhub_cpu.cli", *args]


def write_copies(source: Path, target: Path, copies: int) -> list[Path]:
    """``copies`` copies of the series in ``source`` under ``target/copy_<i>``, each with UIDs of its own."""
    files = sorted(p for p in source.iterdir() if p.is_file())
    folders = []
    for i in range(1, copies + 1):
        folder = target / f"copy_{i}"
        folders.append(folder)
        if folder.is_dir() and len(list(folder.iterdir())) == len(files):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        study, series, frame = generate_uid(), generate_uid(), generate_uid()
        for path in files:
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.SeriesDescription = f"batch benchmark copy {i}"
            ds.save_as(folder / path.name, enforce_file_format=True)
    return folders


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list[str], log_path: Path) -> tuple[float, float]:
    """Run ``command``, keep its output in ``log_path``, return its wall and CPU seconds.

    CPU seconds are those of the command and every process it waited for (Dask's workers too):
    on a shared machine they show the work done where wall seconds also show the waiting.

    Raises:
        RuntimeError: it failed (the last line of its output says why).
    """
    start, cpu = time.perf_counter(), _children_cpu_s()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - start, _children_cpu_s() - cpu
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return seconds, cpu


def inference_seconds(stages: dict[str, float]) -> float:
    """Seconds in the network: every stage named ``inference…`` (as the batch summary counts them)."""
    return sum(seconds for name, seconds in stages.items() if name.startswith("inference"))


def figures(name: str, wall_s: float, cpu_s: float, series: list[dict], workers: int, threads: str) -> dict:
    """The record of one contender: wall, CPU, throughput, pure-inference throughput, overhead, memory."""
    n = len(series)
    inference = sum(s["inference_s"] for s in series)
    peaks: dict[str, float] = {}
    for s in series:
        peaks[s["worker"]] = max(peaks.get(s["worker"], 0.0), s["peak_rss_mb"] or 0.0)
    per_hour = 3600 * n / wall_s
    pure = 3600 * n / (inference / workers)
    return {
        "run": name, "workers": workers, "threads": threads, "series": n, "wall_s": round(wall_s, 2),
        "cpu_s_per_series": round(cpu_s / n, 2), "load_average_1min_after": round(os.getloadavg()[0], 2),
        "series_per_hour": round(per_hour, 1), "inference_s_per_series": round(inference / n, 2),
        "pure_inference_series_per_hour": round(pure, 1), "throughput_vs_pure_inference": round(per_hour / pure, 3),
        "overhead_s_per_series": round(wall_s / n - inference / (workers * n), 2),
        "peak_rss_mb_per_worker": {worker: round(mb, 1) for worker, mb in peaks.items()}, "per_series": series,
    }


def separate_commands(workload: Workload, inputs: list[Path], runs: Path) -> dict:
    """One ``mhub-cpu segment`` per copy, one after another."""
    series, total, cpu_total = [], 0.0, 0.0
    for i, folder in enumerate(inputs, start=1):
        out = runs / f"copy_{i}"
        seconds, cpu = _run(mhub_cpu("segment", "--input", str(folder), "--output", str(out), "--model", str(workload.model), *SETTINGS),
                       runs / f"copy_{i}.log")
        total += seconds
        cpu_total += cpu
        report = json.loads((out / "report.json").read_text())
        series.append({"copy": i, "wall_s": round(seconds, 2), "inference_s": round(inference_seconds(report["stages_s"]), 3),
                       "stages_s": report["stages_s"], "peak_rss_mb": report["peak_rss_mb"], "worker": f"command {i}"})
        log(f"{workload.name} separate {i}/{len(inputs)}: {seconds:.1f} s, inference {series[-1]['inference_s']:.1f} s")
    return figures("separate commands", total, cpu_total, series, 1, "all cores")


def batch_command(workload: Workload, root: Path, out: Path, name: str, extra: tuple[str, ...] = ()) -> dict:
    """One ``mhub-cpu batch segment`` over every copy under ``root``."""
    seconds, cpu = _run(mhub_cpu("batch", "segment", "--input", str(root), "--output", str(out), "--model", str(workload.model), *SETTINGS, *extra),
                   out.parent / f"{out.name}.log")
    summary = json.loads((out / "batch.json").read_text())
    rows = summary["series"]
    failed = [r for r in rows if r["status"] != "done"]
    if failed:
        raise RuntimeError(f"{name}: {len(failed)} series not done: {failed[0]['status']} {failed[0]['reason']}")
    series, threads = [], set()
    for row in rows:
        report = json.loads((Path(row["output_dir"]) / "report.json").read_text())
        threads.add(report["inference"]["settings"].get("threads") or "all cores")
        series.append({"series_uid": row["series_uid"], "seconds_total": row["seconds_total"],
                       "inference_s": round(inference_seconds(report["stages_s"]), 3), "stages_s": report["stages_s"],
                       "peak_rss_mb": row["peak_rss_mb"], "worker": row["worker"]})
    workers = len({s["worker"] for s in series})
    record = figures(name, seconds, cpu, series, workers, ", ".join(sorted(map(str, threads))))
    record["cluster"] = summary.get("cluster")
    log(f"{workload.name} {name}: {seconds:.1f} s for {len(rows)} series on {workers} worker(s)")
    return record


def run_benchmark(output: Path, workload_names: list[str], copies: int, repeats: int = 1) -> dict:
    """Each contender ``repeats`` times, in rotation (so that a busy spell of the shared machine hits
    them alike); the fastest of each is kept, all walls are recorded."""
    work = output / "work" / "batch"
    records: list[dict] = []
    for workload in build_workloads(output, workload_names):
        inputs = write_copies(workload.input_dir, work / "inputs" / workload.name, copies)
        runs = work / "runs" / workload.name / time.strftime("%Y%m%d-%H%M%S")
        log(f"{workload.name}: converting the f32 IR and one warm-up run (not timed)")
        _run(mhub_cpu("convert", "--model", str(workload.model), "--precision", "f32"), runs / "convert.log")
        _run(mhub_cpu("segment", "--input", str(inputs[0]), "--output", str(runs / "warmup"), "--model", str(workload.model), *SETTINGS),
             runs / "warmup.log")
        tries: dict[str, list[dict]] = {"separate": [], "default": [], "single": []}
        for repeat in range(1, repeats + 1):
            tries["separate"].append(separate_commands(workload, inputs, runs / f"{repeat}" / "separate"))
            tries["default"].append(batch_command(workload, inputs[0].parent, runs / f"{repeat}" / "batch-default", "batch, default workers"))
            tries["single"].append(batch_command(workload, inputs[0].parent, runs / f"{repeat}" / "batch-1-worker", "batch, 1 worker", ("--workers", "1")))
        separate, default, single = (min(tries[k], key=lambda r: r["wall_s"]) for k in ("separate", "default", "single"))
        for key, record in zip(tries, (separate, default, single)):
            record.update(workload=workload.name, description=workload.description, wall_s_of_repeats=[r["wall_s"] for r in tries[key]])
        for record in (default, single):
            record["overhead_smaller_by"] = round(separate["overhead_s_per_series"] / max(record["overhead_s_per_series"], 1e-6), 2)
        records += [separate, default, single]
        write_results(output, records, copies)
    return write_results(output, records, copies)


def write_results(output: Path, records: list[dict], copies: int) -> dict:
    payload = {"machine": _machine(), "versions": package_versions(), "copies": copies, "settings": list(SETTINGS), "records": records}
    write_json(output / "batch.json", payload)
    (output / "batch.md").write_text(markdown(payload))
    return payload


def _peaks(record: dict) -> str:
    values = list(record["peak_rss_mb_per_worker"].values())
    return f"{max(values):.0f}" if record["run"] == "separate commands" else " / ".join(f"{v:.0f}" for v in values)


def markdown(payload: dict) -> str:
    machine = payload["machine"]
    lines = [
        f"Batch benchmark: {payload['copies']} copies of the sample series (112 slices, new UIDs each), "
        f"settings {' '.join(payload['settings'])}. Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB.",
        "Pure inference: the throughput were every worker only running the network (from each series' `inference` stage); "
        "overhead: wall per series minus inference per series and worker. Peak RSS: per worker (batch; VmHWM per series, "
        f"maximum over the worker's series) or per command (largest of the {payload['copies']}). CPU s: the command and "
        "every process it waited for (getrusage of children); load after: the 1-minute load average when the run ended "
        f"(the machine is shared; {machine['cores']} cores). With repeats, the fastest of each contender's runs is shown.",
        "",
        "| workload | run | workers × threads | wall s | CPU s/series | load after | series/h | inference s/series | "
        "pure-inference series/h | series/h ÷ pure | overhead s/series | overhead smaller by | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["records"]:
        smaller = f"{r['overhead_smaller_by']:.1f}×" if "overhead_smaller_by" in r else "–"
        lines.append(
            f"| {r['workload']} | {r['run']} | {r['workers']} × {r['threads']} | {r['wall_s']:.1f} | {r['cpu_s_per_series']:.1f} | "
            f"{r['load_average_1min_after']:.1f} | {r['series_per_hour']:.0f} | "
            f"{r['inference_s_per_series']:.2f} | {r['pure_inference_series_per_hour']:.0f} | {r['throughput_vs_pure_inference']:.2f} | "
            f"{r['overhead_s_per_series']:.2f} | {smaller} | {_peaks(r)} |"
        )
    lines += ["", "| workload | run | overhead ≥ 3× smaller than separate commands | series/h within 10 % of pure inference |", "|---|---|---|---|"]
    for r in payload["records"]:
        if "overhead_smaller_by" not in r:
            continue
        overhead_met = r["overhead_smaller_by"] >= OVERHEAD_FACTOR
        throughput_met = r["throughput_vs_pure_inference"] >= 1 - THROUGHPUT_TOLERANCE
        lines.append(
            f"| {r['workload']} | {r['run']} | {'met' if overhead_met else 'not met'} ({r['overhead_smaller_by']:.1f}×) | "
            f"{'met' if throughput_met else 'not met'} ({100 * (1 - r['throughput_vs_pure_inference']):.0f} % below) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mhub_cpu_dev.bench.batch", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("output/bench"))
    parser.add_argument("--workloads", nargs="+", default=["D", "W2"], help="subset of D W2 (any of W1 W2 W3 D works)")
    parser.add_argument("--copies", type=int, default=COPIES)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each contender, in rotation; the fastest is reported")
    args = parser.parse_args(argv)
    run_benchmark(args.output, args.workloads, args.copies, args.repeats)
    print((args.output / "batch.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
