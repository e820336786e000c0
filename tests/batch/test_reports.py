"""Collection reports of a batch: statistics.csv, qa_report.csv and qa_report.html from real per-series outputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from conftest import CT_DICOM
from mhub_cpu.batch.outcome import SeriesOutcome, Status
from mhub_cpu.batch.reports import body_part_match, write_qa_report, write_statistics

HOSTILE = '<script>alert("x")</script> & <img src="http://example.org/a.png">'


def run_cli(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "mhub_cpu.cli", *args], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr


def copy_with_body_part(target: Path, body_part: str | None) -> tuple[str, str]:
    """The sample series under new Study/Series/SOP UIDs, Body Part Examined set or (None) removed."""
    study, series = generate_uid(), generate_uid()
    target.mkdir(parents=True)
    for path in sorted(CT_DICOM.iterdir()):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if body_part is None:
            del ds.BodyPartExamined
        else:
            ds.BodyPartExamined = body_part
        ds.save_as(target / path.name, enforce_file_format=True)
    return study, series


def fitted_bodypart_model(target: Path) -> Path:
    """The stand-in bpreg model with its read-out fitted to the sample, scores spread so that it spans L3 to Th9.

    Random convolutions with a fitted read-out score the sample from feet to head; the look-up
    table maps its first and last slices to 31 and 55, the abdomen, so the sample (header: ABDOMEN)
    gets the tag ABDOMEN.
    """
    from mhub_cpu.bodypart.model import ScoreModel
    from mhub_cpu.bodypart.modelfiles import open_model_dir
    from mhub_cpu.bodypart.preprocess import prepare_slices
    from mhub_cpu.dicomio import read_input
    from mhub_cpu_dev.standins.bodypart import fitted_readout, random_state_dict, write_model_dir

    slices = prepare_slices(read_input(CT_DICOM, target / "work").image).slices  # as the DICOM run sees them
    state = fitted_readout(random_state_dict(seed=3), slices)
    write_model_dir(target / "model", state)
    raw = ScoreModel(open_model_dir(target / "model")).predict(slices)
    first, last = float(raw[:10].mean()), float(raw[-10:].mean())
    span = (last - first) * 100 / (55 - 31)
    low = first - 31 * span / 100
    return write_model_dir(target / "model", state, raw_low=low, raw_high=low + span, slope_mean=(55 - 31) / ((len(raw) - 10) * 3.0))


@pytest.fixture(scope="module")
def bodypart_batch(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Per-series bodypart outputs as a batch leaves them (OUT/<Study>/<Series>/), and their outcome rows."""
    root = tmp_path_factory.mktemp("bodypart_batch")
    model = fitted_bodypart_model(root / "standin")
    collection_a, collection_b = root / "collection_a", root / "collection_b"
    sample = pydicom.dcmread(next(CT_DICOM.iterdir()), stop_before_pixels=True)
    inputs = {
        "sample": (CT_DICOM, (str(sample.StudyInstanceUID), str(sample.SeriesInstanceUID)), "ABDOMEN"),
        "chest": (collection_a / "chest", copy_with_body_part(collection_a / "chest", "CHEST"), "CHEST"),
        "absent": (collection_a / "absent", copy_with_body_part(collection_a / "absent", None), None),
    }
    out = root / "out"
    outcomes = []
    for name, (source, (study, series), header) in inputs.items():
        run_cli("bodypart", "--input", str(source), "--output", str(out / study / series), "--model", str(model))
        outcomes.append(SeriesOutcome(
            input_root=collection_a, study_uid=study, series_uid=series, status=Status.SKIPPED if name == "absent" else Status.DONE,
            reason="", output_dir=out / study / series, header_body_part=header, modality="CT", series_description=name, files=112,
        ))
    qa = {name: json.loads((o.output_dir / "qa.json").read_text()) for name, o in zip(inputs, outcomes)}
    assert qa["sample"]["body_part_examined"]["bpreg_tag"] == "ABDOMEN", "the stand-in model is fitted to give the sample ABDOMEN"
    outcomes.append(SeriesOutcome(
        input_root=collection_a, study_uid="1.2.3", series_uid="1.2.3.4", status=Status.FAILED, reason="exit 2: non-uniform slice spacing",
        output_dir=out / "1.2.3" / "1.2.3.4", header_body_part="CHEST", modality="CT", series_description="broken", files=40,
    ))
    outcomes.append(SeriesOutcome(
        input_root=collection_b, study_uid="1.2.5", series_uid="1.2.5.6", status=Status.NOT_RUN, reason="not CT (Modality MR)",
        output_dir=None, header_body_part=None, modality="MR", series_description=HOSTILE, files=20,
    ))
    csv_path, html_path = write_qa_report(outcomes, root / "reports")
    return {"outcomes": outcomes, "qa": qa, "csv": csv_path, "html": html_path, "inputs": list(inputs)}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_qa_csv_compares_body_part_with_the_header(bodypart_batch):
    rows = read_rows(bodypart_batch["csv"])
    assert len(rows) == 5
    by_description = {r["series_description"]: r for r in rows}
    assert by_description["sample"]["body_part_vs_header"] == "match"
    assert by_description["chest"]["body_part_vs_header"] == "mismatch"
    assert by_description["chest"]["header_body_part"] == "CHEST"
    assert by_description["absent"]["body_part_vs_header"] == "header missing"
    assert by_description["absent"]["status"] == "skipped"
    for name in bodypart_batch["inputs"]:
        row, qa = by_description[name], bodypart_batch["qa"][name]
        assert row["body_part"] == qa["body_part_examined"]["bpreg_tag"] == "ABDOMEN"
        assert row["body_part_dicom"] == qa["body_part_examined"]["dicom"]["defined_term"]
        assert row["verdict"] == qa["verdict"] and row["reversed_slice_order"] == qa["reversed_slice_order"]
        assert row["z_spacing_plausible"] == qa["z_spacing_plausible"]
        assert float(row["z_spacing_mm"]) == qa["z_spacing_mm"]
        assert row["landmarks_covered"].split() == qa["landmarks_covered"]
        assert int(row["jumps"]) == sum(g["kind"] == "jump" for g in qa["gaps"])
        bpreg = json.loads((Path(row["output_dir"]) / "bpreg.json").read_text())
        scores = [s for s in bpreg["cleaned slice scores"] if s is not None]
        assert (float(row["score_min"]), float(row["score_max"])) == (min(scores), max(scores))


@pytest.mark.slow
def test_qa_csv_keeps_rows_that_did_not_run_with_their_reason(bodypart_batch):
    rows = {r["series_uid"]: r for r in read_rows(bodypart_batch["csv"])}
    failed, not_run = rows["1.2.3.4"], rows["1.2.5.6"]
    assert (failed["status"], failed["reason"]) == ("failed", "exit 2: non-uniform slice spacing")
    assert (not_run["status"], not_run["reason"]) == ("not run", "not CT (Modality MR)")
    for row in (failed, not_run):
        assert row["verdict"] == row["body_part"] == row["body_part_vs_header"] == ""
    assert not_run["series_description"] == HOSTILE  # the CSV holds the text as it is
    assert [r["index"] for r in read_rows(bodypart_batch["csv"])] == ["1", "2", "3", "4", "5"]
    assert [r["input_root"] for r in read_rows(bodypart_batch["csv"])][-1].endswith("collection_b")


class PageParser(HTMLParser):
    """Tags, attributes, text and table rows of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.extend(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


@pytest.mark.slow
def test_qa_page_is_self_contained_with_one_row_per_series(bodypart_batch):
    page = bodypart_batch["html"].read_text(encoding="utf-8")
    parser = PageParser()
    parser.feed(page)
    assert "script" not in parser.tags and not {"img", "link", "iframe", "object", "embed"} & set(parser.tags)
    assert not [a for a in parser.attributes if a[0] in ("src", "href", "srcset", "xlink:href")]
    assert "url(" not in page and "@import" not in page
    assert parser.tags.count("svg") == 2
    for svg in page.split("<svg")[1:]:  # each plot is well-formed SVG
        ET.fromstring("<svg" + svg.split("</svg>")[0] + "</svg>")
    collections = [t for t in parser.tables if t and t[0][:1] == ["#"]]
    assert len(collections) == 2
    series_rows = [row for table in collections for row in table[1:]]
    assert len(series_rows) == 5
    uids = {row[2] for row in series_rows}
    assert uids == {o.series_uid for o in bodypart_batch["outcomes"]}
    assert HOSTILE in "".join(parser.text)  # shown as text ...
    assert "&lt;script&gt;" in page and "<script" not in page  # ... because it is escaped
    score_bars = page.split("<svg")[1].count("<rect")
    assert score_bars == 3  # one per series with scores


@pytest.fixture(scope="module")
def segment_batch(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> dict:
    root = tmp_path_factory.mktemp("segment_batch")
    sample = pydicom.dcmread(next(CT_DICOM.iterdir()), stop_before_pixels=True)
    study, series = str(sample.StudyInstanceUID), str(sample.SeriesInstanceUID)
    output = root / "out" / study / series
    run_cli("segment", "--input", str(CT_DICOM), "--output", str(output), "--model", str(demo_model))
    common = {"input_root": CT_DICOM.parent, "study_uid": study, "header_body_part": "ABDOMEN", "modality": "CT", "files": 112}
    outcomes = [
        SeriesOutcome(series_uid=series, status=Status.DONE, reason="", output_dir=output, series_description="done", **common),
        SeriesOutcome(series_uid=series + ".9", status=Status.SKIPPED, reason="", output_dir=output, series_description="skipped", **common),
        SeriesOutcome(series_uid="1.2.9", status=Status.FAILED, reason="exit 4: nothing found", output_dir=root / "none",
                      series_description="failed", **common),
        SeriesOutcome(series_uid="1.2.10", status=Status.NOT_RUN, reason="localizer only", output_dir=None, series_description="scout", **common),
    ]
    return {"csv": write_statistics(outcomes, root / "reports"), "report": json.loads((output / "report.json").read_text())}


@pytest.mark.slow
def test_statistics_has_the_volumes_of_report_json(segment_batch):
    with open(segment_batch["csv"], newline="") as handle:
        header = next(csv.reader(handle))
    rows = read_rows(segment_batch["csv"])
    segments = segment_batch["report"]["result"]["segments"]
    assert header[:8] == ["input_root", "study_uid", "series_uid", "series_description", "status", "model", "output_dir", "reason"]
    assert header[8:] == [s["name"] for s in segments]  # one column per structure, in label order
    assert [r["status"] for r in rows] == ["done", "skipped"]  # failed and not-run series have no volumes
    for row in rows:
        assert row["model"] == segment_batch["report"]["model"]["id"] and row["reason"] == ""
        assert {s["name"]: float(row[s["name"]]) for s in segments} == {s["name"]: s["volume_ml"] for s in segments}
    assert any(s["volume_ml"] > 0 for s in segments)


def test_statistics_row_says_why_a_report_is_missing(tmp_path):
    outcome = SeriesOutcome(tmp_path, "1.2", "1.2.3", Status.DONE, "", tmp_path / "gone", None, "CT", None, 3)
    rows = read_rows(write_statistics([outcome], tmp_path / "reports"))
    assert len(rows) == 1 and rows[0]["reason"] == f"report.json missing in {tmp_path / 'gone'}"


@pytest.mark.parametrize(
    ("ours", "header", "expected"),
    [
        ("ABDOMEN", "ABDOMEN", "match"), ("ABDOMEN", "abdomen ", "match"), ("ABDOMEN", "CHEST", "mismatch"),
        ("ABDOMEN-PELVIS", "ABDOMENPELVIS", "match"), ("ABDOMEN-PELVIS", "ABDOMEN_PELVIS", "match"),
        ("CHEST-ABDOMEN-PELVIS", "CHESTABDPELVIS", "match"), ("CHEST-ABDOMEN-PELVIS", "CHEST-ABDOMEN-PELVIS", "match"),
        ("CHEST-ABDOMEN-PELVIS", "ABDOMEN", "mismatch"), ("HEAD-NECK-CHEST", "HEADNECK", "mismatch"),
        ("ABDOMEN", None, "header missing"), ("ABDOMEN", "  ", "header missing"),
        ("NONE", "ABDOMEN", "undetermined"), ("NONE", None, "undetermined"), ("ABDOMEN", "WHOLEBODY", "undetermined"),
    ],
)
def test_body_part_against_header_terms(ours, header, expected):
    assert body_part_match(ours, header) == expected


def test_unreadable_qa_json_is_a_reason_not_a_failure(tmp_path):
    missing, error, broken = tmp_path / "missing", tmp_path / "error", tmp_path / "broken"
    error.mkdir()
    (error / "qa.json").write_text(json.dumps({"status": "error", "error": {"message": "the volume has 1 slice"}}))
    broken.mkdir()
    (broken / "qa.json").write_text("{")
    outcomes = [SeriesOutcome(tmp_path, "1.2", f"1.2.{i}", Status.DONE, "", d, "CHEST", "CT", "x", 1) for i, d in enumerate((missing, error, broken))]
    csv_path, html_path = write_qa_report(outcomes, tmp_path / "reports")
    reasons = [r["reason"] for r in read_rows(csv_path)]
    assert reasons[0] == f"qa.json missing in {missing}"
    assert reasons[1] == "qa.json holds an error record: the volume has 1 slice"
    assert reasons[2].startswith(f"qa.json unreadable in {broken}")
    assert all(r["verdict"] == "" for r in read_rows(csv_path))
    parser = PageParser()
    parser.feed(html_path.read_text())
    table = next(t for t in parser.tables if t[0][:1] == ["#"])
    verdict = table[0].index("verdict")
    assert [row[verdict] for row in table[1:]] == ["no result"] * 3
