"""Tests for configs/auto3dseg_models.json and scripts/build_model_catalog.py."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO

REPO_ROOT = REPO
DATA_DIR = REPO_ROOT / "data"
CATALOG_PATH = REPO_ROOT / "configs" / "auto3dseg_models.json"
SCRIPT = REPO_ROOT / "scripts" / "build_model_catalog.py"
CODE_FIELDS = ("category", "type", "type_modifier", "anatomic_region", "anatomic_region_modifier")


@pytest.fixture(scope="module")
def catalog() -> dict[str, Any]:
    return json.loads(CATALOG_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def models(catalog: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {model["id"]: model for model in catalog["models"]}


@pytest.fixture(scope="module")
def ts_rows() -> dict[str, dict[str, str]]:
    with (DATA_DIR / "codes" / "totalsegmentator_snomed_mapping.csv").open(newline="", encoding="utf-8") as f:
        return {row["Structure"]: row for row in csv.DictReader(f)}


def segment(model: dict[str, Any], name: str) -> dict[str, Any]:
    (match,) = [s for s in model["segments"] if s["name"] == name]
    return match


def test_committed_json_matches_generator(tmp_path: Path) -> None:
    out = tmp_path / "catalog.json"
    subprocess.run([sys.executable, str(SCRIPT), "--output", str(out)], check=True, cwd=tmp_path)
    assert out.read_bytes() == CATALOG_PATH.read_bytes(), "re-run scripts/build_model_catalog.py"


def test_every_ct_model_version_present(models: dict[str, dict[str, Any]]) -> None:
    slicer = json.loads((DATA_DIR / "catalog" / "SlicerMONAIAuto3DSeg-Models.json").read_text(encoding="utf-8"))
    expected: dict[str, tuple[str, bool]] = {}
    for model in slicer["models"]:
        if model["imagingModality"] != "CT":
            continue
        for index, version in enumerate(model["versions"]):
            match = re.search(r"(?P<filename>[^/]+)-v(?P<version>\d+\.\d+\.\d+)", version["url"])
            expected[f"{match['filename']}-v{match['version']}"] = (version["url"], index > 0)
    assert sorted(models) == sorted(expected)
    for model_id, (url, deprecated) in expected.items():
        model = models[model_id]
        assert (model["url"], model["deprecated"]) == (url, deprecated)
        assert model["id"] == f"{model['name']}-v{model['version']}"
        assert model["sha256"] is None
    assert models["abdominal-organs-3mm-v2.0.0"]["quick"] and not models["abdominal-organs-v2.0.0"]["quick"]
    assert models["abdominal-organs-v2.0.0"]["reference_cpu_seconds"] == 301.1


def test_abdominal_organs_codes(models: dict[str, dict[str, Any]], ts_rows: dict[str, dict[str, str]]) -> None:
    model = models["abdominal-organs-v2.0.0"]
    assert len(model["segments"]) == 23
    assert all(s["type"] and s["type"]["scheme"] == "SCT" and s["type"]["value"] for s in model["segments"])
    for name, ts_class, segdb_id in [
        ("Liver", "liver", "LIVER"),
        ("Spleen", "spleen", "SPLEEN"),
        ("Left Kidney", "kidney_left", "LEFT_KIDNEY"),
        ("Right Kidney", "kidney_right", "RIGHT_KIDNEY"),
        ("Small Intestine", "small_bowel", "SMALL_INTESTINE"),
        ("Middle lobe of right lung", "lung_middle_lobe_right", "RIGHT_MIDDLE_LUNG_LOBE"),
    ]:
        seg, row = segment(model, name), ts_rows[ts_class]
        assert (seg["totalsegmentator_class"], seg["mhub_segdb_id"], seg["code_source"]) == (
            ts_class,
            segdb_id,
            "totalsegmentator",
        )
        assert seg["type"]["value"] == row["SegmentedPropertyTypeCodeSequence.CodeValue"]
        assert seg["category"]["value"] == row["SegmentedPropertyCategoryCodeSequence.CodeValue"]
        modifier = row["SegmentedPropertyTypeModifierCodeSequence.CodeValue"]
        assert (seg["type_modifier"] or {}).get("value") == (modifier or None)
        assert seg["color"] == [int(c) for c in row["DicomRGBColor"].split(",")]
    assert segment(model, "Liver")["type"]["value"] == "10200004"
    assert segment(model, "Left Kidney")["type_modifier"]["value"] == "7771000"
    cyst = segment(model, "Cyst in Left Kidney")
    assert cyst["totalsegmentator_class"] == "kidney_cyst_left"
    assert cyst["anatomic_region"]["value"] == ts_rows["kidney_left"]["SegmentedPropertyTypeCodeSequence.CodeValue"]
    assert cyst["anatomic_region_modifier"]["meaning"] == "Left"


def test_aliases_and_manual_codes(models: dict[str, dict[str, Any]], ts_rows: dict[str, dict[str, str]]) -> None:
    muscles = models["muscles-v2.0.0"]
    assert segment(muscles, "Left Gluteus minius muscle")["totalsegmentator_class"] == "gluteus_minimus_left"
    assert segment(models["ribs-v2.0.0"], "Left Eighth rib")["mhub_segdb_id"] == "LEFT_RIB_8"
    assert segment(models["anatomy_and_icrh-v1.0.1"], "Intracerebral_Haemorrhage")["totalsegmentator_class"] == (
        "intracerebral_hemorrhage"
    )
    hemorrhage = segment(models["icrh-v1.0.0"], "Hemorrhage in Cerebellum")
    ts_hemorrhage = ts_rows["intracerebral_hemorrhage"]
    assert hemorrhage["code_source"] == "manual"
    assert hemorrhage["type"]["value"] == ts_hemorrhage["SegmentedPropertyTypeCodeSequence.CodeValue"]
    assert hemorrhage["category"]["value"] == ts_hemorrhage["SegmentedPropertyCategoryCodeSequence.CodeValue"]


def test_segments_well_formed(catalog: dict[str, Any]) -> None:
    unmapped = set()
    for model in catalog["models"]:
        names = [s["name"] for s in model["segments"]]
        assert len(names) == len(set(names)), model["id"]
        for seg in model["segments"]:
            color = seg["color"]
            assert len(color) == 3 and all(type(c) is int and 0 <= c <= 255 for c in color), seg
            if seg["code_source"] is None:
                unmapped.add(seg["name"])
                assert all(seg[field] is None for field in CODE_FIELDS), seg
            else:
                assert seg["code_source"] in {"totalsegmentator", "segdb", "manual"}
                assert seg["category"]["value"] and seg["type"]["value"], seg
    assert catalog["unmapped_segments"] == sorted(unmapped)
    assert set(catalog["sources"]) == {"slicer_catalog", "totalsegmentator_snomed_mapping", "segdb"}
