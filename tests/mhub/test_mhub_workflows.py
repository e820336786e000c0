"""Every MHub workflow run end to end through mhubio (``mhub-cpu mhub-run``) on the shared sample.

The demo model stands in for the Auto3DSeg weights and randomly initialised weights for bpreg.
Runs stop on a failing instance (mhubio's stop-on-error) and exit non-zero; the tests also check the
files and their content, and compare them with the reference summaries in tests/mhub/mhub_reference/ (MHUB_CPU_UPDATE_REFERENCE=1 rewrites them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import yaml

from conftest import CT_DICOM, CT_NIFTI

REFERENCE = Path(__file__).resolve().parent / "mhub_reference"
IDC_SERIES = "61.7.186195007319014217251157852440977945371"
SAMPLE_SERIES = pydicom.dcmread(next(CT_DICOM.iterdir()), stop_before_pixels=True).SeriesInstanceUID
AUTO3DSEG = "modules.Auto3DSegOpenVINORunner.model=demo"

pytestmark = pytest.mark.slow


def mhub_run(model: str, workflow: str, input_dir: Path, output_dir: Path, *settings: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mhub_cpu.cli", "mhub-run", "--model", model, "--workflow", workflow,
               "--input", str(input_dir), "--output", str(output_dir)]
    for setting in settings:
        command += ["--set", setting]
    return subprocess.run(command, capture_output=True, text=True)


def run_ok(model: str, workflow: str, input_dir: Path, output_dir: Path, *settings: str) -> Path:
    result = mhub_run(model, workflow, input_dir, output_dir, *settings)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


def expected_outputs(model: str, workflow: str) -> list[str]:
    """The test definition's output paths, with the IDC series replaced by the local sample's."""
    outputs = yaml.safe_load((REFERENCE / model / f"{workflow}.test.yml").read_text())["output"]
    return [o.replace(IDC_SERIES, SAMPLE_SERIES) for o in outputs]


def check_reference(model: str, workflow: str, summary: dict) -> dict:
    """The stored reference summary (rewritten first when MHUB_CPU_UPDATE_REFERENCE=1)."""
    path = REFERENCE / model / f"{workflow}.reference.json"
    if os.environ.get("MHUB_CPU_UPDATE_REFERENCE") == "1":
        path.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return json.loads(path.read_text())


def assert_counts_close(actual: dict[str, int], reference: dict[str, int]) -> None:
    assert set(actual) == set(reference)
    for name, count in reference.items():
        assert abs(actual[name] - count) <= max(20, 0.02 * count), (name, actual[name], count)


def seg_summary(path: Path) -> dict[str, int]:
    """Voxels per segment label of a BINARY DICOM-SEG."""
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    numbers = [g.SegmentIdentificationSequence[0].ReferencedSegmentNumber for g in ds.PerFrameFunctionalGroupsSequence]
    labels = {s.SegmentNumber: s.SegmentLabel for s in ds.SegmentSequence}
    counts = {name: 0 for name in labels.values()}
    for number, frame in zip(numbers, frames):
        counts[labels[number]] += int(frame.sum())
    return counts


@pytest.fixture(scope="module")
def nifti_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("nifti-in")
    (folder / "case1.nii.gz").symlink_to(CT_NIFTI)
    return folder


# --- abdominal_openvino ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def abdominal_default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_ok("abdominal_openvino", "default", CT_DICOM, tmp_path_factory.mktemp("abd-default"), AUTO3DSEG)


@pytest.fixture(scope="module")
def abdominal_fast(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_ok("abdominal_openvino", "fast", CT_DICOM, tmp_path_factory.mktemp("abd-fast"), AUTO3DSEG)


@pytest.fixture(scope="module")
def abdominal_nifti(tmp_path_factory: pytest.TempPathFactory, nifti_input: Path) -> Path:
    return run_ok("abdominal_openvino", "nifti", nifti_input, tmp_path_factory.mktemp("abd-nifti"), AUTO3DSEG)


@pytest.mark.parametrize("workflow", ["default", "fast"])
def test_abdominal_dicom_workflows_write_a_dicom_seg_highdicom_reads(workflow: str, request: pytest.FixtureRequest) -> None:
    out = request.getfixturevalue(f"abdominal_{workflow}")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(expected_outputs("abdominal_openvino", workflow))
    seg_path, report_path = (out / p for p in expected_outputs("abdominal_openvino", workflow))
    seg = hd.seg.segread(seg_path)
    assert seg.Modality == "SEG"
    assert {uid for _, uid, _ in seg.get_source_image_uids()} == {SAMPLE_SERIES}
    report = json.loads(report_path.read_text())
    found = {s["name"] for s in report["result"]["segments"] if s["voxels"]}
    assert {seg.get_segment_description(n).segment_label for n in seg.get_segment_numbers()} == found
    summary = seg_summary(seg_path)
    assert_counts_close(summary, check_reference("abdominal_openvino", workflow, summary))


def test_abdominal_nifti_workflow_writes_a_label_map_on_the_input_grid(abdominal_nifti: Path) -> None:
    files = expected_outputs("abdominal_openvino", "nifti")
    assert sorted(str(p.relative_to(abdominal_nifti)) for p in abdominal_nifti.rglob("*") if p.is_file()) == sorted(files)
    labels, ct = nib.load(abdominal_nifti / files[0]), nib.load(CT_NIFTI)
    assert labels.shape == ct.shape and np.allclose(labels.affine, ct.affine, atol=1e-4)
    report = json.loads((abdominal_nifti / files[1]).read_text())
    names = {s["label"]: s["name"] for s in report["result"]["segments"]}
    values, counts = np.unique(np.asarray(labels.dataobj), return_counts=True)
    summary = {names[int(v)]: int(c) for v, c in zip(values, counts) if v}
    assert_counts_close(summary, check_reference("abdominal_openvino", "nifti", summary))


def test_failing_instance_makes_mhub_run_fail(tmp_path: Path) -> None:
    result = mhub_run("abdominal_openvino", "default", CT_DICOM, tmp_path / "out", "modules.Auto3DSegOpenVINORunner.model=/no/such/model.zip")
    assert result.returncode != 0
    assert "Auto3DSegOpenVINORunner failed processing instance" in result.stderr
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_unknown_workflow_is_refused(tmp_path: Path) -> None:
    result = mhub_run("abdominal_openvino", "slicer", CT_DICOM, tmp_path / "out")
    assert result.returncode == 2
    assert "workflows: default, fast, nifti" in result.stderr


# --- bpreg -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def random_bpreg(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mhub_cpu_dev.standins.bodypart import random_state_dict, write_model_dir

    return f"modules.BodyPartRegressionRunner.model={write_model_dir(tmp_path_factory.mktemp('bpreg-model'), random_state_dict(seed=0))}"


@pytest.fixture(scope="module")
def bpreg_runs(tmp_path_factory: pytest.TempPathFactory, random_bpreg: str, nifti_input: Path) -> dict[str, Path]:
    inputs = {"default": CT_DICOM, "qa": CT_DICOM, "nifti": nifti_input}
    return {w: run_ok("bpreg", w, i, tmp_path_factory.mktemp(f"bpreg-{w}"), random_bpreg) for w, i in inputs.items()}


@pytest.mark.parametrize("workflow", ["default", "nifti", "qa"])
def test_bpreg_workflows_write_json_and_sr(workflow: str, bpreg_runs: dict[str, Path]) -> None:
    out = bpreg_runs[workflow]
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    qa = json.loads(next(out.rglob("bpreg.qa.json")).read_text())
    assert qa["status"] == "ok"
    expected = expected_outputs("bpreg", workflow)
    if "landmarks" not in qa.get("sr", {"landmarks": None}):  # random weights may reach no landmark: no landmark SR then
        expected = [e for e in expected if not e.endswith("bpr_landmarks.sr.dcm")]
    assert written == sorted(expected)
    for sr_path in out.rglob("*.sr.dcm"):
        sr = hd.sr.srread(sr_path)
        assert sr.Modality == "SR" and sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].SeriesInstanceUID == SAMPLE_SERIES
    summary = {"verdict": qa["verdict"], "body_part_examined": qa["body_part_examined"]["bpreg_tag"]}
    if workflow != "qa":
        bpreg = json.loads(next(out.rglob("bpreg.json")).read_text())
        scores = np.array([np.nan if s is None else s for s in bpreg["cleaned slice scores"]], dtype=float)
        summary["cleaned slice scores"] = [None if np.isnan(s) else round(float(s), 3) for s in scores]
    reference = check_reference("bpreg", workflow, summary)
    assert summary["verdict"] == reference["verdict"] and summary["body_part_examined"] == reference["body_part_examined"]
    if workflow != "qa":
        ref_scores = np.array([np.nan if s is None else s for s in reference["cleaned slice scores"]], dtype=float)
        assert np.allclose(scores, ref_scores, atol=0.5, equal_nan=True)
