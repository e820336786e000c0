"""DICOM-SEG writing benchmark: a W3-sized BINARY SEG written by highdicom and by our frame encoder.

W3 is the whole-body model (117 labels, ``whole-body-3mm-v2.0.0`` in the catalogue) on the
320x240x400 chest-abdomen-pelvis series of ``make bench`` (``workloads.write_large_series``, built
from the sample CT). Its label map: the sample CT's TotalSegmentator labels carried to that grid the
way the series carries the CT (nearest neighbour, mirrored along z), mapped to the whole-body label
values by TotalSegmentator class; plus the speckle that W3's random-weight network scatters over
the volume: 113 labels, each a 3x3 spot per slice over a random run of 250-400 slices. That gives
W3's ~113 segments and ~38,000 frames.

Each contender runs in its own process (peak RSS is its own) and writes the same map: ``highdicom``
is highdicom's own encoding (the engine's path before the frame encoder), ``ours`` is
``write_dicom_seg``. Both files are read back frame by frame and compared with the label map.
Writes ``seg_writing.json`` and ``seg_writing.md`` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from scipy.ndimage import zoom

from mhub_cpu.auto3dseg.catalog import find_entry
from mhub_cpu.auto3dseg.labels import Label
from mhub_cpu.core.files import write_atomic, write_json
from mhub_cpu.core.progress import log, peak_rss_mb
from mhub_cpu.dicomio.discovery import scan_directory
from mhub_cpu.dicomio.geometry import dicom_grid_affine_ras
from mhub_cpu.dicomio.headers import prepare_headers
from mhub_cpu.dicomio.series import DicomSeries
from mhub_cpu.dicomio.uids import resolve_uids
from mhub_cpu.dicomio.validation import sort_and_validate
from mhub_cpu.outputs.dicom_seg import SegmentationType, highdicom_segmentation, segment_number_map, write_dicom_seg
from mhub_cpu_dev.bench.workloads import write_large_series
from mhub_cpu_dev.data import CT, DATA, SAMPLE_NIFTI

MODEL = "whole-body-3mm-v2.0.0"
REFERENCE_LABELS = CT / "abdomen_3mm_totalseg_labels.nii.gz"
TOTALSEG_CLASSES = DATA / "codes" / "totalsegmentator_total_v2_labels.json"
CONTENDERS = ("highdicom", "ours")


def whole_body_labels() -> list[Label]:
    """The whole-body model's 117 labels, values 1..117 in catalogue order, with their codes."""
    entry = find_entry(MODEL)
    return [entry.label_defaults(Label(value, name, {})) for value, name in enumerate(entry.segments, start=1)]


def read_series(folder: Path) -> DicomSeries:
    """The series' headers, ordered and repaired as ``read_input`` does (no conversion)."""
    series = scan_directory(folder)[0][0]
    resolve_uids(series)
    sort_and_validate(series)
    prepare_headers(series)
    return series


def w3_label_map(series: DicomSeries, labels: list[Label], seed: int = 0) -> np.ndarray:
    """Label values in the series' pixel order (slice, row, column): anatomy plus speckle (module doc)."""
    first = series.instances[0]
    shape = (int(first.Columns), int(first.Rows), len(series.instances))  # the RAS grid of write_large_series
    reference = nib.as_closest_canonical(nib.load(REFERENCE_LABELS))
    if reference.shape != nib.load(SAMPLE_NIFTI).shape:
        raise ValueError(f"{REFERENCE_LABELS} is not on the sample CT's grid")
    totalseg_names = {int(k): v for k, v in json.loads(TOTALSEG_CLASSES.read_text()).items()}
    by_class = {segment["totalsegmentator_class"]: segment["name"] for segment in find_entry(MODEL).segments.values()}
    value_of = {label.name: label.value for label in labels}
    lookup = np.zeros(max(totalseg_names) + 1, dtype=np.uint8)
    for totalseg_id, name in totalseg_names.items():
        if name in by_class:
            lookup[totalseg_id] = value_of[by_class[name]]
    anatomy = lookup[np.asarray(reference.dataobj).astype(np.intp)]
    spacing = float(first.PixelSpacing[0])
    volume = zoom(anatomy, (shape[0] / anatomy.shape[0], shape[1] / anatomy.shape[1], 3.0 / spacing), order=0)
    repeats = int(np.ceil(shape[2] / volume.shape[2]))
    volume = np.concatenate([volume if i % 2 == 0 else volume[:, :, ::-1] for i in range(repeats)], axis=2)[:, :, : shape[2]]
    label_map = np.ascontiguousarray(volume[::-1, ::-1, :].transpose(2, 1, 0))  # as write_large_series stores pixels
    rng = np.random.default_rng(seed)
    n_slices, rows, columns = label_map.shape
    for label in rng.choice(labels, size=113, replace=False):
        length = int(rng.integers(250, min(400, n_slices) + 1))
        start = int(rng.integers(0, n_slices - length + 1))
        for k in range(start, start + length):
            row, column = int(rng.integers(0, rows - 3)), int(rng.integers(0, columns - 3))
            label_map[k, row : row + 3, column : column + 3] = label.value
    return label_map


def label_image(label_map: np.ndarray, series: DicomSeries) -> nib.Nifti1Image:
    """The map as a NIfTI on the series' grid (column, row, slice), as the segment job hands it over."""
    return nib.Nifti1Image(label_map.transpose(2, 1, 0), dicom_grid_affine_ras(series.instances))


def read_back(path: Path, series: DicomSeries, labels: list[Label]) -> np.ndarray:
    """Label values rebuilt from a BINARY SEG's frames: each frame's bits (PS3.5 8.1.1) placed on the
    slice its Derivation Image names, with the label value of its segment."""
    seg = pydicom.dcmread(path)
    rows, columns = int(seg.Rows), int(seg.Columns)
    value_of = {label.name: label.value for label in labels}
    segment_value = {int(item.SegmentNumber): value_of[item.SegmentLabel] for item in seg.SegmentSequence}
    slice_of = {ds.SOPInstanceUID: k for k, ds in enumerate(series.instances)}
    rebuilt = np.zeros((len(series.instances), rows, columns), dtype=np.uint8)
    bits = np.frombuffer(seg.PixelData, dtype=np.uint8)
    frame_pixels = rows * columns
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        k = slice_of[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        first, last = index * frame_pixels, (index + 1) * frame_pixels
        frame = np.unpackbits(bits[first // 8 : (last + 7) // 8], bitorder="little")[first % 8 : first % 8 + frame_pixels]
        plane = rebuilt[k].reshape(-1)
        if np.any(plane[frame.astype(bool)]):
            raise ValueError(f"{path}: frame {index + 1} overlaps another segment")
        plane[frame.astype(bool)] = segment_value[number]
    return rebuilt


def child(which: str, series_dir: Path, work: Path, result_path: Path, repeats: int) -> None:
    """Write the map ``repeats`` times with one contender in this process; seconds per run, frames, peak RSS."""
    series = read_series(series_dir)
    labels = whole_body_labels()
    image = nib.load(work / "w3_labels.nii")
    output = work / f"{which}.dcm"
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        if which == "highdicom":
            segment_map, written = segment_number_map(image, series, labels)
            seg = highdicom_segmentation(segment_map, series, written, MODEL, "2.0.0", SegmentationType.BINARY)
            seg.save_as(output)
        else:
            write_dicom_seg(image, series, labels, output, MODEL, "2.0.0")
        seconds.append(time.perf_counter() - start)
        log(f"{which}: {seconds[-1]:.2f} s")
    header = pydicom.dcmread(output, stop_before_pixels=True, specific_tags=["NumberOfFrames"])
    write_json(result_path, {
        "seconds": seconds, "frames": int(header.NumberOfFrames), "bytes": output.stat().st_size, "peak_rss_mb": peak_rss_mb(),
        "load_average_1min": os.getloadavg()[0],  # other work on the machine while this ran
    })


def run_benchmark(output_dir: Path, repeats: int) -> int:
    """Both contenders side by side; writes seg_writing.json and seg_writing.md."""
    work = output_dir / "work" / "seg_writing"
    work.mkdir(parents=True, exist_ok=True)
    series_dir = write_large_series(output_dir / "inputs" / "w3_dicom")  # shared with make bench
    series = read_series(series_dir)
    labels = whole_body_labels()
    label_map = w3_label_map(series, labels)
    nib.save(label_image(label_map, series), work / "w3_labels.nii")
    segments = len(set(np.unique(label_map).tolist()) - {0})
    log(f"W3 label map {label_map.shape[::-1]}: {segments} segments")
    runs = {}
    for which in CONTENDERS:
        result_path = work / f"{which}.json"
        log(f"running {which} ({repeats}x) ...")
        subprocess.run(
            [sys.executable, "-m", "mhub_cpu_dev.bench.seg_writing", "child", which, str(series_dir), str(work), str(result_path),
             str(repeats)],
            check=True,
        )
        run = json.loads(result_path.read_text())
        start = time.perf_counter()
        run["read_back_equal"] = bool(np.array_equal(read_back(work / f"{which}.dcm", series, labels), label_map))
        log(f"{which}: read back in {time.perf_counter() - start:.1f} s, equal to the label map: {run['read_back_equal']}")
        runs[which] = run
    summary = {
        "workload": f"W3 grid {'x'.join(map(str, label_map.shape[::-1]))}, {MODEL} labels, {segments} segments present",
        "map": "TotalSegmentator labels of the sample CT carried to the W3 grid, plus random-weight-like speckle (see the module doc)",
        "cpus": os.cpu_count(),
        "runs": {
            which: {**run, "median_seconds": statistics.median(run["seconds"]),
                    "speedup": statistics.median(runs["highdicom"]["seconds"]) / statistics.median(run["seconds"])}
            for which, run in runs.items()
        },
    }
    write_json(output_dir / "seg_writing.json", summary)
    write_atomic(output_dir / "seg_writing.md", markdown(summary).encode())
    print(markdown(summary))
    return 0 if all(run["read_back_equal"] for run in runs.values()) else 1


def markdown(summary: dict) -> str:
    lines = [
        f"DICOM-SEG (BINARY) writing: {summary['workload']}; map: {summary['map']}. {summary['cpus']} CPUs; "
        "time is label map to file on disk, median of the runs; peak RSS is the process's high-water mark; "
        "load average after: the 1-minute load when the runs ended (above the CPU count, other work competed).",
        "",
        "| writer | seconds (median) | runs (s) | speed-up | frames | file (MB) | peak RSS (MiB) | read back equals the map | load average after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for which, run in summary["runs"].items():
        lines.append(
            f"| {which} | {run['median_seconds']:.2f} | {', '.join(f'{s:.2f}' for s in run['seconds'])} | {run['speedup']:.1f}x | "
            f"{run['frames']} | {run['bytes'] / 1e6:.0f} | {run['peak_rss_mb']:.0f} | {run['read_back_equal']} | {run['load_average_1min']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """``python -m mhub_cpu_dev.bench.seg_writing [--output DIR] [--repeats N]``; or, as the benchmark's
    child process, ``child CONTENDER SERIES WORK RESULT REPEATS``."""
    if argv and argv[0] == "child":
        child(argv[1], Path(argv[2]), Path(argv[3]), Path(argv[4]), int(argv[5]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m mhub_cpu_dev.bench.seg_writing", description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("output/bench"), help="folder for seg_writing.json and seg_writing.md")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender")
    args = parser.parse_args(argv)
    return run_benchmark(args.output, args.repeats)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
