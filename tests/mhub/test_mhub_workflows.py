"""Every MHub workflow run end to end through mhubio (``mhub-cpu mhub-run``) on the shared sample.

The demo model stands in for the abdominal Auto3DSeg weights, random weights of the same architecture
for the whole-body models, and randomly initialised weights for bpreg.
Runs stop on a failing instance (mhubio's stop-on-error) and exit non-zero; the tests also check the
files and their content, and compare them with the reference summaries in tests/mhub/mhub_reference/ (MHUB_CPU_UPDATE_REFERENCE=1 rewrites them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import yaml

from conftest import CT_DICOM, CT_NIFTI, REPO

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


# --- wholebody_openvino ------------------------------------------------------------------------
# Stand-ins: zips in the production format with random weights of the whole-body architecture (118
# outputs) and the catalogue's labels. Random weights' near-uniform logits flip with the smallest
# numerical difference (on the sample, one OpenVINO thread instead of two moves a segment's count by
# up to 1.8 %, bf16 by up to 6 %; another CPU's kernels likewise), so their counts are compared loosely.

WHOLEBODY_MODELS = {"default": "whole-body-3mm-v2.0.0", "nifti": "whole-body-3mm-v2.0.0", "fullres": "whole-body-v2.0.1"}
#: The fullres test runs on a slab of this many central slices of the sample: the whole 112-slice
#: sample takes 16 windows at 1.5 mm under the workflow's 6000 MiB (4 minutes on the shared 2-core machine).
FULLRES_SLICES = 32


def catalogue_segments(model_id: str) -> list[dict]:
    from mhub_cpu.auto3dseg.catalog import load_catalog

    entry = next(e for e in load_catalog() if e.id == model_id)
    return list(entry.segments.values())


@pytest.fixture(scope="module")
def wholebody_standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``--set`` values naming the stand-in zips, converted to f32 IR beforehand as the image build does
    (a first use that converts in the segmentation process keeps torch's memory on top of the budget)."""
    from mhub_cpu_dev.standins.auto3dseg import write_random_model

    folder = tmp_path_factory.mktemp("wholebody-models")
    zips = {"whole-body-3mm-v2.0.0": write_random_model(folder / "whole-body-3mm-standin.zip", "whole-body-3mm-v2.0.0", [], 3.0),
            "whole-body-v2.0.1": write_random_model(folder / "whole-body-standin.zip", "whole-body-v2.0.1", [], 1.5)}
    for path in zips.values():
        converted = subprocess.run([sys.executable, "-m", "mhub_cpu.cli", "convert", "--model", str(path), "--precision", "f32"],
                                   capture_output=True, text=True)
        assert converted.returncode == 0, converted.stderr[-3000:]
    return {workflow: f"modules.Auto3DSegOpenVINORunner.model={zips[model]}" for workflow, model in WHOLEBODY_MODELS.items()}


@pytest.fixture(scope="module")
def fullres_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The central FULLRES_SLICES slices of the sample series (same series UID), linked."""
    files = sorted(CT_DICOM.iterdir(), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    start = (len(files) - FULLRES_SLICES) // 2
    folder = tmp_path_factory.mktemp("fullres-in")
    for path in files[start:start + FULLRES_SLICES]:
        (folder / path.name).symlink_to(path)
    return folder


@pytest.fixture(scope="module")
def wholebody_runs(tmp_path_factory: pytest.TempPathFactory, wholebody_standins: dict[str, str], nifti_input: Path,
                   fullres_input: Path) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    inputs = {"default": CT_DICOM, "nifti": nifti_input, "fullres": fullres_input}
    runs = {}
    for workflow, input_dir in inputs.items():
        out = tmp_path_factory.mktemp(f"wb-{workflow}")
        result = mhub_run("wholebody_openvino", workflow, input_dir, out, wholebody_standins[workflow])
        assert result.returncode == 0, result.stderr[-3000:]
        runs[workflow] = (out, result)
    return runs


def assert_counts_roughly(actual: dict[str, int], reference: dict[str, int], least: int = 200) -> None:
    """Random-weight counts: every segment of at least ``least`` voxels on either side is found on both,
    within max(100 voxels, 10 %)."""
    for name in set(actual) | set(reference):
        a, r = actual.get(name, 0), reference.get(name, 0)
        if max(a, r) >= least:
            assert abs(a - r) <= max(100, 0.1 * r), (name, a, r)


@pytest.mark.parametrize("workflow", ["default", "fullres"])
def test_wholebody_dicom_workflows_write_a_seg_with_snomed_codes_for_every_structure_found(
    workflow: str, wholebody_runs: dict[str, tuple[Path, subprocess.CompletedProcess]],
) -> None:
    out, _ = wholebody_runs[workflow]
    files = expected_outputs("wholebody_openvino", workflow)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(files)
    seg_path, report_path = (out / p for p in files)
    seg = hd.seg.segread(seg_path)
    assert seg.Modality == "SEG"
    assert {uid for _, uid, _ in seg.get_source_image_uids()} == {SAMPLE_SERIES}
    report = json.loads(report_path.read_text())
    catalogue = {s["name"]: s for s in catalogue_segments(WHOLEBODY_MODELS[workflow])}
    assert [s["name"] for s in report["result"]["segments"]] == list(catalogue)  # 117 labels, the catalogue's names
    assert [s["segdb_id"] for s in report["result"]["segments"]] == [s["mhub_segdb_id"] for s in catalogue.values()]
    found = {s["name"] for s in report["result"]["segments"] if s["voxels"]}
    assert len(found) > 50  # random weights scatter most classes over the body
    items = list(seg.SegmentSequence)
    assert {item.SegmentLabel for item in items} == found
    for item in items:
        expected = catalogue[item.SegmentLabel]
        prop, category = item.SegmentedPropertyTypeCodeSequence[0], item.SegmentedPropertyCategoryCodeSequence[0]
        assert (prop.CodingSchemeDesignator, prop.CodeValue) == ("SCT", expected["type"]["value"]), item.SegmentLabel
        assert (category.CodingSchemeDesignator, category.CodeValue) == ("SCT", expected["category"]["value"]), item.SegmentLabel
        modifier = expected["type_modifier"]
        if modifier:
            assert prop.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == modifier["value"], item.SegmentLabel
    summary = seg_summary(seg_path)
    assert_counts_roughly(summary, check_reference("wholebody_openvino", workflow, summary))


def test_wholebody_fullres_workflow_keeps_its_memory_budget(wholebody_runs: dict[str, tuple[Path, subprocess.CompletedProcess]]) -> None:
    """The workflow's max_memory reaches the engine, the windows shrink to fit it, and the run's own peak stays within it."""
    out, result = wholebody_runs["fullres"]
    report = json.loads((out / expected_outputs("wholebody_openvino", "fullres")[1]).read_text())
    budget = yaml.safe_load((REPO / "models" / "wholebody_openvino" / "config" / "fullres.yml").read_text())["modules"]["Auto3DSegOpenVINORunner"]["max_memory"]
    assert report["inference"]["settings"]["max_memory_mb"] == budget
    assert report["inference"]["window"] != report["inference"]["config"]["roi_size"]
    assert "windows shrunk to" in result.stderr
    assert report["peak_rss_mb"] <= budget
    assert report["inference"]["model_spacing_mm"] == [1.5, 1.5, 1.5]


def test_wholebody_nifti_workflow_writes_a_label_map_on_the_input_grid(wholebody_runs: dict[str, tuple[Path, subprocess.CompletedProcess]]) -> None:
    out, _ = wholebody_runs["nifti"]
    files = expected_outputs("wholebody_openvino", "nifti")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(files)
    labels, ct = nib.load(out / files[0]), nib.load(CT_NIFTI)
    assert labels.shape == ct.shape and np.allclose(labels.affine, ct.affine, atol=1e-4)
    report = json.loads((out / files[1]).read_text())
    assert report["inference"]["settings"]["max_memory_mb"] == 6000
    names = {s["label"]: s["name"] for s in report["result"]["segments"]}
    values, counts = np.unique(np.asarray(labels.dataobj), return_counts=True)
    summary = {names[int(v)]: int(c) for v, c in zip(values, counts) if v}
    assert_counts_roughly(summary, check_reference("wholebody_openvino", "nifti", summary))


def test_wholebody_roi_metadata_lists_the_segdb_ids_in_label_order(tmp_path: Path, wholebody_standins: dict[str, str], nifti_input: Path) -> None:
    """mhubio's JsonSegExporter, added to a copy of the nifti workflow, writes the label map's ``roi`` metadata:
    the catalogue's SegDB id for every label, empty for the 16 SegDB has none for."""
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "wholebody_openvino", models / "wholebody_openvino")
    workflow = yaml.safe_load((models / "wholebody_openvino" / "config" / "nifti.yml").read_text())
    workflow["execute"].insert(-1, "JsonSegExporter")
    workflow["modules"]["JsonSegExporter"] = {"targets": ["nifti:mod=seg-->[i:sid]/whole_body_3mm.nii.gz"]}
    workflow["modules"]["DataOrganizer"]["targets"].append("json:mod=seg-->[i:sid]/segdef.json")
    (models / "wholebody_openvino" / "config" / "roi.yml").write_text(yaml.safe_dump(workflow))
    result = subprocess.run(
        [sys.executable, "-m", "mhub_cpu.cli", "mhub-run", "--model", "wholebody_openvino", "--workflow", "roi",
         "--input", str(nifti_input), "--output", str(tmp_path / "out"), "--set", wholebody_standins["nifti"]],
        capture_output=True, text=True, env={**os.environ, "MHUB_CPU_MODELS": str(models)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [segdef] = json.loads((tmp_path / "out" / "case1" / "segdef.json").read_text())
    segments = catalogue_segments("whole-body-3mm-v2.0.0")
    assert segdef["labels"] == {str(i): s["mhub_segdb_id"] or "" for i, s in enumerate(segments, start=1)}
    missing = [s["name"] for s in segments if not s["mhub_segdb_id"]]
    assert len(missing) == 16
    assert f"no MHub SegDB id for: {', '.join(missing)}" in result.stderr


def test_runner_copies_pass_no_budget_unless_asked(abdominal_default: Path) -> None:
    """abdominal_openvino sets no max_memory: the engine runs without a budget, as before the option existed."""
    report = json.loads(next(abdominal_default.rglob("*.report.json")).read_text())
    assert report["inference"]["settings"]["max_memory_mb"] is None


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
