"""DICOM input end to end: TID 1500 SRs validate and reference the right CT instances, also when
the series is stored and numbered in reverse order; error records for unusable input."""

from __future__ import annotations

import copy
import csv
import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import REPO
from mhub_cpu.bodypart.model import ScoreModel
from mhub_cpu.bodypart.modelfiles import open_model_dir
from mhub_cpu.bodypart.pipeline import Options, run
from mhub_cpu.bodypart.preprocess import prepare_slices
from mhub_cpu.core.errors import InputError
from mhub_cpu_dev.standins.bodypart import random_state_dict, write_model_dir

SHARED = REPO / "data"
CT_DICOM = SHARED / "ct" / "abdomen_3mm_dicom"
CT_NIFTI = SHARED / "ct" / "abdomen_3mm.nii.gz"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Random weights, look-up table spread over this CT's raw score range (0..100 across it)."""
    root = tmp_path_factory.mktemp("srmodel")
    state = random_state_dict(seed=2)
    model_dir = write_model_dir(root / "model", state)
    raw = ScoreModel(open_model_dir(model_dir)).predict(prepare_slices(nib.load(CT_NIFTI)).slices)
    low, high = float(raw[:10].mean()), float(raw[-10:].mean())
    write_model_dir(model_dir, state, raw_low=low, raw_high=high, slope_mean=100 / (len(raw) * 3.0))
    return open_model_dir(model_dir)


def reversed_copy(target: Path) -> Path:
    """The CT series with file names and Instance Numbers running head to feet."""
    target.mkdir()
    files = sorted(CT_DICOM.glob("*.dcm"))
    for number, source in enumerate(reversed(files), start=1):
        ds = pydicom.dcmread(source)
        ds.InstanceNumber = number
        ds.save_as(target / f"IMG{number:04d}.dcm")
    return target


@pytest.fixture(scope="module")
def runs(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("srruns")
    out = {}
    for name, source in (("as_stored", CT_DICOM), ("reversed", reversed_copy(root / "reversed_input"))):
        run(source, root / name, model, Options())
        out[name] = root / name
    return out


def instances_by_height() -> list[pydicom.Dataset]:
    """Source instances from feet to head (bpreg's slice order for a correctly labelled CT)."""
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in CT_DICOM.glob("*.dcm")]
    return sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


def groups(path: Path) -> list:
    return hd.sr.srread(path).content.get_image_measurement_groups()


@pytest.mark.parametrize("name", ["as_stored", "reversed"])
def test_sr_files_validate(runs, name):
    for kind in ("landmarks", "regions"):
        path = runs[name] / f"bpr_{kind}_sr.dcm"
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
        assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
        assert ds.SeriesDescription == f"BPR {kind[:-1]} annotations"
        dciodvfy = shutil.which("dciodvfy") or str(Path(__import__("sys").executable).parent / "dciodvfy")
        assert Path(dciodvfy).exists(), "dciodvfy (dicom3tools, a test dependency) is not installed"
        result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert errors == []


@pytest.mark.parametrize("name", ["as_stored", "reversed"])
def test_sr_references_the_scored_slices(runs, name):
    bpreg = json.loads((runs[name] / "bpreg.json").read_text())
    ordered = [str(ds.SOPInstanceUID) for ds in instances_by_height()]
    cleaned = np.array([np.nan if v is None else v for v in bpreg["cleaned slice scores"]])
    lookup = bpreg["look-up table"]
    landmark_groups = groups(runs[name] / "bpr_landmarks_sr.dcm")
    assert landmark_groups
    by_code = {
        (row["CodeValue"], row["modifier_CodeValue"]): row["BPR_code"]
        for row in csv.DictReader(open(SHARED / "codes" / "idc_bpr" / "bpr_landmarks_code_mapping.csv"))
    }
    for group in landmark_groups:
        site = group.finding_sites[0]
        modifier = site.topographical_modifier.value if site.topographical_modifier is not None else "None"
        landmark = by_code[(site.value.value, modifier)]
        expected = int(np.nanargmin(np.abs(cleaned - lookup[landmark]["mean"])))
        assert group.source_images[0].referenced_sop_instance_uid == ordered[expected], landmark
    region_groups = groups(runs[name] / "bpr_regions_sr.dcm")
    with_region = sorted({int(i) for idx in bpreg["body part examined"].values() for i in idx})
    assert [ordered.index(g.source_images[0].referenced_sop_instance_uid) for g in region_groups] == with_region


def test_reversed_storage_gives_same_results(runs):
    a = json.loads((runs["as_stored"] / "bpreg.json").read_text())
    b = json.loads((runs["reversed"] / "bpreg.json").read_text())
    assert a["body part examined tag"] == b["body part examined tag"]
    assert np.allclose(np.array(a["unprocessed slice scores"]), np.array(b["unprocessed slice scores"]), atol=1e-6)
    refs = [
        [g.source_images[0].referenced_sop_instance_uid for g in groups(runs[n] / "bpr_landmarks_sr.dcm")] for n in runs
    ]
    assert refs[0] == refs[1]


def test_qa_json_reports_source_and_header(runs):
    qa = json.loads((runs["as_stored"] / "qa.json").read_text())
    assert qa["status"] == "ok"
    assert qa["input"]["instances"] == 112 and qa["input"]["generated_uids"] == []
    assert qa["body_part_examined"]["header_value"] == "ABDOMEN"
    assert set(qa["sr"]) >= {"landmarks", "regions"}


def test_single_slice_is_an_error_record(model, tmp_path):
    image = nib.load(CT_NIFTI)
    single = nib.Nifti1Image(np.asanyarray(image.dataobj)[:, :, 50:51], image.affine)
    nib.save(single, tmp_path / "one.nii.gz")
    with pytest.raises(InputError, match="1 slice"):
        run(tmp_path / "one.nii.gz", tmp_path / "out", model, Options())
    qa = json.loads((tmp_path / "out" / "qa.json").read_text())
    assert qa["status"] == "error" and qa["error"]["exit_code"] == 2
    assert not (tmp_path / "out" / "bpreg.json").exists()


def test_non_ct_is_refused(model, tmp_path):
    image = nib.load(CT_NIFTI)
    data = np.asanyarray(image.dataobj)
    nib.save(nib.Nifti1Image((data + 1100).clip(0).astype(np.int16), image.affine), tmp_path / "mr.nii.gz")
    with pytest.raises(InputError, match="do not look like CT"):
        run(tmp_path / "mr.nii.gz", tmp_path / "out2", model, Options())
    assert json.loads((tmp_path / "out2" / "qa.json").read_text())["status"] == "error"


def test_a_sagittal_dicom_series_is_refused_before_scoring(model, tmp_path):
    """Its instances are sagittal planes: the SR could not reference the axial slices scored."""
    source = tmp_path / "sag"
    source.mkdir()
    volume = np.asanyarray(nib.load(CT_NIFTI).dataobj)
    template = pydicom.dcmread(sorted(CT_DICOM.glob("*.dcm"))[0])
    series_uid = pydicom.uid.generate_uid()
    for i in range(volume.shape[0]):
        ds = copy.deepcopy(template)
        plane = np.ascontiguousarray(volume[i].T[::-1].astype(np.int16))  # rows: head to feet, columns: A-P
        ds.Rows, ds.Columns = plane.shape
        ds.PixelData = plane.tobytes()
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [float(i) * 3.0, 0.0, 0.0]
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(source / f"{i:03d}.dcm")
    with pytest.raises(InputError, match="are not axial"):
        run(source, tmp_path / "out", model, Options())


def test_crop_between_landmarks(model, tmp_path):
    result = run(CT_NIFTI, tmp_path, model, Options(crop_from="L5", crop_to="Th12"))
    crop = nib.load(tmp_path / "cropped.nii.gz")
    first, last = result.qa["crop"]["first_slice"], result.qa["crop"]["last_slice"]
    assert crop.shape[2] == last - first + 1
    scores = result.curve.cleaned[first : last + 1]
    lookup = result.bpreg["look-up table"]
    assert np.all((scores >= lookup["L5"]["mean"]) & (scores <= lookup["Th12"]["mean"]))
    original = nib.load(CT_NIFTI)
    assert np.allclose(crop.affine[:3, 3], (original.affine @ np.array([0, 0, first, 1]))[:3])
