"""End to end: DICOM in → DICOM-SEG out, against TotalSegmentator and the MONAI reference pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import CT_DICOM, CT_NIFTI, CT_REFERENCE_LABELS, SCANNER_DICOM, SHARED, copy_series, dice
from mhub_cpu.auto3dseg.bundle import load_bundle
from mhub_cpu.dicomio.discovery import scan_directory
from mhub_cpu.dicomio.geometry import axis_mapping, dicom_grid_affine_ras
from mhub_cpu.dicomio.validation import sort_and_validate

pytestmark = pytest.mark.slow

TOTALSEG_IDS = {name: int(i) for i, name in json.loads((SHARED / "codes" / "totalsegmentator_total_v2_labels.json").read_text()).items()}
ORGANS = {"Liver": "liver", "Spleen": "spleen", "Left Kidney": "kidney_left", "Right Kidney": "kidney_right"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mhub_cpu.cli", *args], capture_output=True, text=True, timeout=900)


def seg_to_label_volume(seg: hd.seg.Segmentation, sop_uids: list[str], label_of_segment: dict[int, int]) -> np.ndarray:
    """Label volume (slices, rows, columns) from a DICOM-SEG, slices in the order of ``sop_uids``."""
    volume = np.zeros((len(sop_uids), seg.Rows, seg.Columns), dtype=np.uint8)
    for number, value in label_of_segment.items():
        mask = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=sop_uids, segment_numbers=[number], combine_segments=False,
            ignore_spatial_locations=False, assert_missing_frames_are_empty=True,
        )[..., 0]
        volume[mask > 0] = value
    return volume


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> Path:
    output = tmp_path_factory.mktemp("demo")
    result = run_cli("segment", "--input", str(CT_DICOM), "--output", str(output), "--model", str(demo_model), "--precision", "f32")
    assert result.returncode == 0, result.stderr
    assert "window 1/" in result.stderr and "inference done in" in result.stderr, "progress and stage timings on stderr"
    return output


def test_outputs_and_report(demo_run: Path) -> None:
    for name in ("segmentation.dcm", "segmentation.nii.gz", "preview.png", "report.json"):
        assert (demo_run / name).stat().st_size > 0, name
    assert not list(demo_run.glob(".partial-*"))
    report = json.loads((demo_run / "report.json").read_text())
    assert set(report["stages_s"]) >= {"read input", "preprocess", "inference", "write outputs", "write DICOM-SEG"}
    assert report["peak_rss_mb"] > 0 and report["inference"]["windows"] > 0
    precision = report["inference"]["precision"]
    assert precision["mode"] == "f32" and precision["ir"] == "fp32" and precision["compute_hint"] == "f32"
    assert set(precision["layers"]["Convolution"]) == {"f32"} and "FP32" in precision["cpu"]["openvino_capabilities"]
    assert report["versions"]["openvino"]


def test_report_carries_the_segdb_id_of_every_segment(demo_run: Path) -> None:
    """The MHub runner reads SegDB ids from the report: they come from the catalogue, by segment name."""
    segments = {s["name"]: s["segdb_id"] for s in json.loads((demo_run / "report.json").read_text())["result"]["segments"]}
    assert segments["Liver"] == "LIVER" and segments["Left Kidney"] == "LEFT_KIDNEY"
    assert segments["Cyst in Left Kidney"] == "LEFT_KIDNEY+CYST"  # SegDB's REGION+PROPERTY composite
    assert all(segments.values()), segments


def _labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path / "segmentation.nii.gz").dataobj)


def test_int8_segmentation_runs_int8_layers_and_agrees_with_f32(demo_run: Path, tmp_path: Path, demo_model: Path) -> None:
    """INT8 (calibrated on the engine's own calibration CT) runs quantised layers and finds the same organs."""
    from mhub_cpu.runtime.precision import CpuCapabilities

    result = run_cli("segment", "--input", str(CT_DICOM), "--output", str(tmp_path), "--model", str(demo_model), "--precision", "int8")
    if "INT8" not in CpuCapabilities.query().openvino:
        assert result.returncode == 3 and "int8 is not supported by this CPU" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    precision = json.loads((tmp_path / "report.json").read_text())["inference"]["precision"]
    assert precision["mode"] == "int8" and precision["ir"] == "int8"
    assert sum(precision["layers"]["Convolution"].get(p, 0) for p in ("u8", "i8")) > 0, precision["layers"]
    ours, f32 = _labels(tmp_path), _labels(demo_run)
    for value, name in {1: "spleen", 2: "right kidney", 3: "left kidney", 5: "liver"}.items():  # the demo's labels.csv
        assert dice(ours == value, f32 == value) > 0.9, name


def test_skip_air_runs_fewer_windows_and_changes_no_organ(tmp_path: Path, demo_model: Path) -> None:
    """--skip-air leaves out windows holding only air, and labels nothing differently.

    The foreground crop removes the air around a body, so the sample CT is widened by 450 mm of air
    with a small object (a 40 HU cube, as a positioning aid would be) at the far side: the windows
    in between hold only air.
    """
    source = nib.load(CT_NIFTI)
    data = np.asarray(source.dataobj).astype(np.int16)
    air = np.full((150, *data.shape[1:]), -1000, dtype=np.int16)
    air[-6:, 45:51, 50:56] = 40
    wide = tmp_path / "wide.nii.gz"
    nib.save(nib.Nifti1Image(np.concatenate([data, air]), source.affine), wide)
    reports, labels = {}, {}
    for mode, extra in (("all", ()), ("skip", ("--skip-air",))):
        result = run_cli("segment", "--input", str(wide), "--output", str(tmp_path / mode), "--model", str(demo_model), *extra)
        assert result.returncode == 0, result.stderr
        reports[mode] = json.loads((tmp_path / mode / "report.json").read_text())["inference"]
        labels[mode] = _labels(tmp_path / mode)
    assert reports["skip"]["settings"]["skip_air"] is True and reports["all"]["settings"]["skip_air"] is False
    assert 0 < reports["skip"]["windows"] < reports["all"]["windows"], (reports["skip"]["windows"], reports["all"]["windows"])
    body = (slice(0, data.shape[0]),)  # in the added air the model may label noise; skipped windows label nothing
    for value in np.unique(labels["all"][body])[1:]:
        assert dice(labels["skip"][body] == value, labels["all"][body] == value) > 0.99, int(value)



def test_dicom_seg_references_source_and_carries_codes(demo_run: Path, demo_model: Path) -> None:
    seg = hd.seg.segread(demo_run / "segmentation.dcm")
    source = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(CT_DICOM.iterdir())]
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert seg.PatientID == source[0].PatientID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source[0].SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == {ds.SOPInstanceUID for ds in source}
    labels = {label.name: label for label in load_bundle(demo_model).labels}
    assert seg.SegmentationType == "BINARY"
    for description in seg.SegmentSequence:
        label = labels[description.SegmentLabel]
        assert description.SegmentedPropertyTypeCodeSequence[0].CodeValue == label.codes["type"].value
        assert description.SegmentedPropertyCategoryCodeSequence[0].CodeValue == label.codes["category"].value
        if "type_modifier" in label.codes:
            modifier = description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
            assert modifier.CodeValue == label.codes["type_modifier"].value
        assert description.SegmentAlgorithmName == "abdominal-organs-demo-v0.1.0"
        assert "RecommendedDisplayCIELabValue" in description
    assert {"Liver", "Spleen", "Left Kidney", "Right Kidney"} <= {d.SegmentLabel for d in seg.SegmentSequence}


def test_dice_against_totalsegmentator_through_dicom_seg(demo_run: Path) -> None:
    """Geometry end to end: DICOM-SEG frames, placed by their source instances, against the reference."""
    seg = hd.seg.segread(demo_run / "segmentation.dcm")
    series = scan_directory(CT_DICOM)[0][0]
    sort_and_validate(series)
    sop_uids = [ds.SOPInstanceUID for ds in series.instances]
    numbers = {d.SegmentLabel: int(d.SegmentNumber) for d in seg.SegmentSequence}
    ours = seg_to_label_volume(seg, sop_uids, {numbers[name]: i for i, name in enumerate(ORGANS, start=1)})
    reference_image = nib.load(CT_REFERENCE_LABELS)
    first = series.instances[0]
    mapping = axis_mapping(
        reference_image.affine, reference_image.shape, dicom_grid_affine_ras(series.instances),
        (int(first.Columns), int(first.Rows), len(series.instances)),
    )
    reference = mapping.apply(np.asarray(reference_image.dataobj)).transpose(2, 1, 0)
    for value, (name, totalseg_name) in enumerate(ORGANS.items(), start=1):
        score = dice(ours == value, reference == TOTALSEG_IDS[totalseg_name])
        assert score >= 0.8, f"{name}: Dice {score:.3f}"


def test_agreement_with_monai_reference_pipeline(demo_model: Path, tmp_path: Path) -> None:
    from mhub_cpu.convert.reference import reference_segment

    result = run_cli("segment", "--input", str(CT_NIFTI), "--output", str(tmp_path), "--model", str(demo_model), "--precision", "f32")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "segmentation.dcm").exists(), "NIfTI input gives NIfTI output only"
    ours = np.asarray(nib.load(tmp_path / "segmentation.nii.gz").dataobj)
    reference = np.asarray(reference_segment(CT_NIFTI, load_bundle(demo_model)).dataobj)
    assert ours.shape == reference.shape
    found = [v for v in np.unique(reference) if v != 0]
    assert len(found) >= 10
    for value in found:
        score = dice(ours == value, reference == value)
        assert score >= 0.99, f"label {value}: Dice {score:.4f}"


def test_scanner_series_runs_and_reports_generated_uids(demo_model: Path, tmp_path: Path) -> None:
    result = run_cli("segment", "--input", str(SCANNER_DICOM), "--output", str(tmp_path), "--model", str(demo_model), "--seg-type", "LABELMAP")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert sorted(report["input"]["generated_uids"]) == ["SeriesInstanceUID", "StudyInstanceUID"]
    assert any("generated UIDs" in warning for warning in report["input"]["warnings"])
    seg = hd.seg.segread(tmp_path / "segmentation.dcm")
    assert seg.SegmentationType == "LABELMAP"
    assert seg.StudyInstanceUID == report["input"]["study_instance_uid"]
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == report["input"]["series_instance_uid"]
    file_meta_uids = {pydicom.dcmread(p, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID for p in SCANNER_DICOM.iterdir()}
    referenced_uids = {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence}
    assert referenced_uids == file_meta_uids and all(referenced_uids), "real instance UIDs, none empty"


def _assert_failed_cleanly(result: subprocess.CompletedProcess, output: Path, message: str, exit_code: int) -> None:
    assert result.returncode == exit_code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    leftovers = [p.name for p in output.iterdir()] if output.exists() else []
    assert leftovers == [], f"no output after failure, found {leftovers}"


def test_cli_bad_inputs(tmp_path: Path, demo_model: Path) -> None:
    mr = tmp_path / "mr"
    copy_series(CT_DICOM, mr, Modality="MR", SOPClassUID="1.2.840.10008.5.1.4.1.1.4")
    two = tmp_path / "two"
    copy_series(CT_DICOM, two / "a")
    copy_series(CT_DICOM, two / "b", SeriesInstanceUID=pydicom.uid.generate_uid())
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    truncated = tmp_path / "truncated"
    files = copy_series(CT_DICOM, truncated)
    files[7].write_bytes(files[7].read_bytes()[:3000])
    cases = [
        (tmp_path / "missing", "input path does not exist", 2),
        (empty, "no DICOM image files", 2),
        (mr, "no CT series", 2),
        (two, "choose one with --series", 2),
        (truncated, "truncated DICOM file", 2),
    ]
    for index, (source, message, code) in enumerate(cases):
        output = tmp_path / f"out{index}"
        result = run_cli("segment", "--input", str(source), "--output", str(output), "--model", str(demo_model))
        _assert_failed_cleanly(result, output, message, code)


def test_cli_model_zip_without_labels(tmp_path: Path, demo_model: Path) -> None:
    broken = tmp_path / "nolabels.zip"
    with zipfile.ZipFile(demo_model) as source, zipfile.ZipFile(broken, "w") as target:
        target.writestr("model/model.pt", source.read("model/model.pt"))
    output = tmp_path / "out"
    result = run_cli("segment", "--input", str(CT_DICOM), "--output", str(output), "--model", str(broken))
    _assert_failed_cleanly(result, output, "has no labels.csv", 3)
