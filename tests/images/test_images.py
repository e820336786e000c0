"""The images, run as users run them: offline (``--network none``), on a mounted DICOM folder.

Run by ``make test-images`` after ``make images`` (marker ``images``, deselected otherwise). The
outputs are checked as the engine's own tests check them (highdicom reads the SEG back, dciodvfy
finds no error), and the containers' results are compared with the same runs outside them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import CT_DICOM, SCANNER_DICOM
from mhub_cpu_dev import images

pytestmark = pytest.mark.images

MHUB_DATA = "/app/data"


@pytest.fixture(scope="module", autouse=True)
def podman() -> list[str]:
    images.configure()
    return images.engine()


def container(image: str, *args: str, mounts: dict[Path, str], timeout: int = 900) -> subprocess.CompletedProcess:
    """``podman run --rm --network none`` with folders mounted (``:ro`` where the target says so); fails
    when the image is not built (``make test-images`` builds each before its tests)."""
    assert images.image_exists(image), f"{image} is not built: run make images"
    volumes = []
    for source, target in mounts.items():
        volumes += ["-v", f"{source}:{target}"]
    command = [*images.engine(), "run", "--rm", "--network", "none", *volumes, image, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def dciodvfy_errors(path: Path) -> list[str]:
    tool = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def seg_segments(path: Path) -> list[str]:
    seg = hd.seg.segread(path)
    return [item.SegmentLabel for item in seg.SegmentSequence]


def test_engine_image_segments_a_mounted_dicom_folder_offline(tmp_path: Path, demo_model: Path) -> None:
    """As README tells users: docker run -v input:/data/in:ro -v output:/data/out mhub-cpu segment ..."""
    out = tmp_path / "out"
    out.mkdir()
    result = container(images.ENGINE, "segment", "--input", "/data/in", "--output", "/data/out",
                       mounts={CT_DICOM: "/data/in:ro", out: "/data/out"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["preview.png", "report.json", "segmentation.dcm", "segmentation.nii.gz"]
    assert dciodvfy_errors(out / "segmentation.dcm") == []
    outside = tmp_path / "outside"
    local = subprocess.run([sys.executable, "-m", "mhub_cpu.cli", "segment", "--input", str(CT_DICOM), "--output", str(outside)],
                           capture_output=True, text=True)
    assert local.returncode == 0, local.stderr
    assert seg_segments(out / "segmentation.dcm") == seg_segments(outside / "segmentation.dcm")
    inside, there = (np.asarray(nib.load(p / "segmentation.nii.gz").dataobj) for p in (out, outside))
    assert (inside == there).mean() > 0.9999


def test_engine_image_refuses_bad_input_with_one_line_and_no_output(tmp_path: Path) -> None:
    bad = tmp_path / "in"
    bad.mkdir()
    dataset = pydicom.dcmread(next(CT_DICOM.iterdir()))
    dataset.Modality = "MR"
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.save_as(bad / "mr.dcm", enforce_file_format=True)
    out = tmp_path / "out"
    out.mkdir()
    result = container(images.ENGINE, "segment", "--input", "/data/in", "--output", "/data/out",
                       mounts={bad: "/data/in:ro", out: "/data/out"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("mhub-cpu: error: no CT series"), result.stderr
    assert "Traceback" not in result.stderr and list(out.iterdir()) == []


def _two_series(tmp_path: Path) -> Path:
    source = tmp_path / "input"
    shutil.copytree(CT_DICOM, source / "abdomen")
    shutil.copytree(SCANNER_DICOM, source / "scanner")
    return source


def _mhub(image: str, workflow: str, source: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    """``mhub.run --workflow W --print [--flag ...] [--config:key=value ...]`` as MHub's users run it."""
    out.mkdir(parents=True, exist_ok=True)
    flags = [o for o in options if o.startswith("--")]
    config = [f"--config:{o}" for o in options if not o.startswith("--")]
    return container(image, "--workflow", workflow, "--print", *flags, *config,
                     mounts={source: f"{MHUB_DATA}/input_data:ro", out: f"{MHUB_DATA}/output_data"})


def test_abdominal_image_default_workflow_matches_mhub_run_outside(tmp_path: Path, demo_model: Path) -> None:
    """Two series in, one output folder each; the same SEG segments as mhub-run outside the container."""
    source = _two_series(tmp_path)
    result = _mhub(images.MODEL_IMAGES["abdominal_openvino"], "default", source, tmp_path / "out",
                   "modules.Auto3DSegOpenVINORunner.model=demo")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    segs = sorted((tmp_path / "out").rglob("*.seg.dcm"))
    assert len(segs) == 2, sorted(str(p) for p in (tmp_path / "out").rglob("*"))
    assert len({p.parent for p in segs}) == 2, "one output folder per series"
    for seg in segs:
        assert dciodvfy_errors(seg) == [], seg
    outside = tmp_path / "outside"
    local = subprocess.run(
        [sys.executable, "-m", "mhub_cpu.cli", "mhub-run", "--model", "abdominal_openvino", "--input", str(source),
         "--output", str(outside), "--set", "modules.Auto3DSegOpenVINORunner.model=demo"],
        capture_output=True, text=True,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    inside_by_series = {pydicom.dcmread(p).ReferencedSeriesSequence[0].SeriesInstanceUID: seg_segments(p) for p in segs}
    outside_segs = sorted(outside.rglob("*.seg.dcm"))
    outside_by_series = {pydicom.dcmread(p).ReferencedSeriesSequence[0].SeriesInstanceUID: seg_segments(p) for p in outside_segs}
    assert inside_by_series == outside_by_series


def test_bpreg_image_default_workflow_matches_mhub_run_outside(tmp_path: Path) -> None:
    source = tmp_path / "input"
    shutil.copytree(CT_DICOM, source / "abdomen")
    result = _mhub(images.MODEL_IMAGES["bpreg"], "default", source, tmp_path / "out",
                   "modules.BodyPartRegressionRunner.model=/opt/mhub-cpu/bpreg-model")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    inside = json.loads(next((tmp_path / "out").rglob("bpreg.json")).read_text())
    qa = json.loads(next((tmp_path / "out").rglob("*qa.json")).read_text())
    assert qa["status"] == "ok"
    srs = sorted((tmp_path / "out").rglob("*.sr.dcm"))
    assert srs and all(dciodvfy_errors(p) == [] for p in srs)
    outside = tmp_path / "outside"
    local = subprocess.run(
        [sys.executable, "-m", "mhub_cpu.cli", "mhub-run", "--model", "bpreg", "--input", str(source), "--output", str(outside),
         "--set", f"modules.BodyPartRegressionRunner.model={images.OUT / 'bpreg-standin'}"],
        capture_output=True, text=True,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    there = json.loads(next(outside.rglob("bpreg.json")).read_text())
    assert inside.keys() == there.keys()
    for key, value in inside.items():  # numbers to float noise (OpenVINO in and outside), everything else equal
        if key in ("cleaned slice scores", "unprocessed slice scores"):
            np.testing.assert_allclose(np.array(value, dtype=float), np.array(there[key], dtype=float), atol=1e-3, equal_nan=True)
        elif isinstance(value, float):
            assert value == pytest.approx(there[key], rel=1e-4, abs=1e-6, nan_ok=True), key
        else:
            assert value == there[key], key


def test_bpreg_image_stops_on_bad_input_with_the_cause_and_no_output(tmp_path: Path) -> None:
    """MHub's own --stop-on-error: a one-slice series stops the run non-zero, the cause is printed, nothing is written."""
    source = tmp_path / "input" / "one"
    source.mkdir(parents=True)
    shutil.copy(next(CT_DICOM.iterdir()), source / "only-slice.dcm")
    result = _mhub(images.MODEL_IMAGES["bpreg"], "default", tmp_path / "input", tmp_path / "out", "--stop-on-error",
                   "modules.BodyPartRegressionRunner.model=/opt/mhub-cpu/bpreg-model")
    assert result.returncode != 0
    assert "mhub-cpu: error: series" in result.stdout and "a volume needs at least 2" in result.stdout, result.stdout[-2000:]
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("precision", ["f32", "bf16", "fp16", "int8"])
def test_every_precision_runs_offline_in_the_abdominal_image_or_is_refused(tmp_path: Path, precision: str) -> None:
    """The IRs were made at build time (torch and NNCF are gone from the image): no mode converts at run time."""
    from mhub_cpu.runtime.precision import CpuCapabilities, Precision

    source = tmp_path / "input"
    shutil.copytree(CT_DICOM, source / "abdomen")
    result = _mhub(images.MODEL_IMAGES["abdominal_openvino"], "default", source, tmp_path / "out", "--stop-on-error",
                   "modules.Auto3DSegOpenVINORunner.model=demo", f"modules.Auto3DSegOpenVINORunner.precision={precision}")
    log = result.stdout + result.stderr
    assert "converting" not in log and "INT8 quantisation" not in log, "converted at run time"
    if not CpuCapabilities.query().supports(Precision(precision).compute):
        assert result.returncode != 0 and f"{precision} is not supported by this CPU" in log
        return
    assert result.returncode == 0, log[-3000:]
    report = json.loads(next((tmp_path / "out").rglob("*.report.json")).read_text())
    assert report["inference"]["precision"]["mode"] == precision
    assert seg_segments(next((tmp_path / "out").rglob("*.seg.dcm")))


def test_bpreg_image_runs_int8_offline(tmp_path: Path) -> None:
    source = tmp_path / "input"
    shutil.copytree(CT_DICOM, source / "abdomen")
    result = _mhub(images.MODEL_IMAGES["bpreg"], "default", source, tmp_path / "out", "--stop-on-error",
                   "modules.BodyPartRegressionRunner.model=/opt/mhub-cpu/bpreg-model", "modules.BodyPartRegressionRunner.precision=int8")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "INT8 quantisation" not in result.stdout
    qa = json.loads(next((tmp_path / "out").rglob("*qa.json")).read_text())
    assert qa["status"] == "ok" and qa["model"]["precision"] == "int8"


def _segment_voxels(path: Path) -> dict[str, int]:
    """Voxels per segment label of a BINARY DICOM-SEG."""
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    labels = {item.SegmentNumber: item.SegmentLabel for item in ds.SegmentSequence}
    counts = dict.fromkeys(labels.values(), 0)
    for group, frame in zip(ds.PerFrameFunctionalGroupsSequence, frames):
        counts[labels[group.SegmentIdentificationSequence[0].ReferencedSegmentNumber]] += int(frame.sum())
    return counts


def test_wholebody_image_default_workflow_writes_snomed_codes_and_matches_mhub_run_outside(tmp_path: Path) -> None:
    """The whole-body stand-in (random weights of the 3 mm model's architecture), converted at build time."""
    from mhub_cpu.auto3dseg.catalog import find_entry

    source = tmp_path / "input"
    shutil.copytree(CT_DICOM, source / "abdomen")
    result = _mhub(images.MODEL_IMAGES["wholebody_openvino"], "default", source, tmp_path / "out", "--stop-on-error",
                   f"modules.Auto3DSegOpenVINORunner.model=/opt/mhub-cpu/models/{images.WHOLEBODY_STANDIN}")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "converting" not in log, "converted at run time"
    seg_path = next((tmp_path / "out").rglob("whole_body_3mm.seg.dcm"))
    assert dciodvfy_errors(seg_path) == []
    items = list(pydicom.dcmread(seg_path, stop_before_pixels=True).SegmentSequence)
    assert len(items) > 50  # random weights scatter most classes over the body
    assert {item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator for item in items} == {"SCT"}
    assert {item.SegmentLabel for item in items} <= set(find_entry("whole-body-3mm-v2.0.0").segments)
    outside = tmp_path / "outside"
    local = subprocess.run(
        [sys.executable, "-m", "mhub_cpu.cli", "mhub-run", "--model", "wholebody_openvino", "--input", str(source),
         "--output", str(outside), "--set", f"modules.Auto3DSegOpenVINORunner.model={images.OUT / 'wholebody-standin' / images.WHOLEBODY_STANDIN}"],
        capture_output=True, text=True,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    inside, there = _segment_voxels(seg_path), _segment_voxels(next(outside.rglob("whole_body_3mm.seg.dcm")))
    for name in set(inside) | set(there):  # near-uniform random logits: tiny segments may flip, the rest agree
        a, b = inside.get(name, 0), there.get(name, 0)
        if max(a, b) >= 200:
            assert abs(a - b) <= max(100, 0.1 * max(a, b)), (name, a, b)
