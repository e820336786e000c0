"""Collection-level reports of a batch, built from the per-series outputs on disk.

``statistics.csv`` (``batch segment``): one row per segmented series, one column per structure,
volumes in mL, as TotalSegmentator's statistics give them. ``qa_report.csv`` and
``qa_report.html`` (``batch bodypart``): one row per series, including those that did not run or
failed, with our body part against the header's Body Part Examined and the qa.json verdicts.

They read the files each series run left (report.json, qa.json, bpreg.json) rather than results
held in memory, so a batch resumed over series completed earlier (SKIPPED) reports them the same
way, and a missing or unreadable file becomes a reason in its row, never a failed report.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from functools import cache
from pathlib import Path

from mhub_cpu.batch.outcome import SeriesOutcome, Status
from mhub_cpu.batch.qa_page import QaRow, render
from mhub_cpu.bodypart.tables import read_csv
from mhub_cpu.core.files import write_atomic

STATISTICS_FILE = "statistics.csv"
QA_CSV_FILE = "qa_report.csv"
QA_HTML_FILE = "qa_report.html"
_RAN = (Status.DONE, Status.SKIPPED)


def _read_json(path: Path) -> tuple[dict | None, str]:
    """The JSON object at ``path``, or None and why not (a reason for the report row)."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path.name} missing in {path.parent}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name} unreadable in {path.parent}: {exc}"
    if not isinstance(payload, dict):
        return None, f"{path.name} in {path.parent} is not a JSON object"
    return payload, ""


def _by_collection(outcomes: Sequence[SeriesOutcome]) -> list[SeriesOutcome]:
    """Outcomes grouped by input root (roots in order of first appearance), order kept within each."""
    roots = list(dict.fromkeys(o.input_root for o in outcomes))
    return sorted(outcomes, key=lambda o: roots.index(o.input_root))


def _csv_bytes(header: Sequence[str], rows: Sequence[dict[str, object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def write_statistics(outcomes: Sequence[SeriesOutcome], out_dir: Path) -> Path:
    """``statistics.csv``: volume (mL) of every structure in every DONE / SKIPPED series, from its report.json."""
    fixed = ["input_root", "study_uid", "series_uid", "series_description", "status", "model", "output_dir", "reason"]
    rows: list[dict[str, object]] = []
    structures: dict[str, None] = {}  # in the model's label order, across models if several
    for outcome in _by_collection([o for o in outcomes if o.status in _RAN]):
        row: dict[str, object] = {
            "input_root": outcome.input_root, "study_uid": outcome.study_uid, "series_uid": outcome.series_uid,
            "series_description": outcome.series_description or "", "status": outcome.status.value,
            "output_dir": outcome.output_dir or "", "model": "", "reason": "",
        }
        report, problem = _read_json(outcome.output_dir / "report.json") if outcome.output_dir else (None, "no output folder")
        if report is None:
            row["reason"] = problem
        else:
            row["model"] = report.get("model", {}).get("id", "")
            for segment in report.get("result", {}).get("segments", []):
                structures.setdefault(segment["name"], None)
                row[segment["name"]] = segment["volume_ml"]
        rows.append(row)
    path = Path(out_dir) / STATISTICS_FILE
    write_atomic(path, _csv_bytes([*fixed, *structures], rows))
    return path


def _normalised(term: str) -> str:
    """Upper case, letters and digits only: ``Abdomen-Pelvis``, ``ABDOMEN_PELVIS`` and ``ABDOMENPELVIS`` agree."""
    return "".join(ch for ch in term.upper() if ch.isalnum())


@cache
def _header_terms() -> dict[str, str]:
    """Normalised header value -> bpreg tag, from the table the bodypart job maps its tags with.

    A header may carry the DICOM defined term (``CHESTABDPELVIS``) or spell out the parts
    (``CHEST-ABDOMEN-PELVIS``); both name the same tag.
    """
    terms: dict[str, str] = {}
    for row in read_csv("body_part_examined_terms.csv"):
        if row["bpreg_tag"] == "NONE":
            continue
        terms[_normalised(row["bpreg_tag"])] = row["bpreg_tag"]
        if row["dicom_defined_term"]:
            terms[_normalised(row["dicom_defined_term"])] = row["bpreg_tag"]
    return terms


def body_part_match(ours: str, header: str | None) -> str:
    """``match`` / ``mismatch`` / ``header missing`` / ``undetermined`` for our bpreg tag against the header.

    ``undetermined``: our tag is NONE, or the header holds a term no bpreg tag corresponds to
    (e.g. ``WHOLEBODY``, ``LSPINE``), so the two cannot be compared.
    """
    if ours == "NONE":
        return "undetermined"
    if not header or not header.strip():
        return "header missing"
    theirs = _header_terms().get(_normalised(header))
    if theirs is None:
        return "undetermined"
    return "match" if theirs == ours else "mismatch"


def _gap_text(gaps: list[dict]) -> str:
    return "; ".join(f"{g.get('kind')} {g.get('first_slice')}-{g.get('last_slice')}" for g in gaps)


def _score_range(bpreg: dict | None) -> tuple[float | None, float | None]:
    """Lowest and highest cleaned slice score (removed slices are null in bpreg.json)."""
    scores = [v for v in (bpreg or {}).get("cleaned slice scores", []) if isinstance(v, (int, float)) and math.isfinite(v)]
    return (min(scores), max(scores)) if scores else (None, None)


def landmark_scores(bpreg: dict) -> dict[str, float]:
    """Expected score of every landmark of the model's look-up table (bpreg.json ``look-up table``)."""
    return {name: float(entry["mean"]) for name, entry in bpreg.get("look-up table", {}).items() if isinstance(entry, dict) and "mean" in entry}


def qa_row(index: int, outcome: SeriesOutcome) -> tuple[QaRow, dict | None]:
    """The report row of one series and its bpreg.json (for the landmark table), read from its output folder."""
    base = QaRow(
        index=index, input_root=str(outcome.input_root), study_uid=outcome.study_uid, series_uid=outcome.series_uid,
        series_description=outcome.series_description or "", modality=outcome.modality or "", files=outcome.files,
        status=outcome.status.value, reason=outcome.reason, output_dir=str(outcome.output_dir or ""),
        header_body_part=(outcome.header_body_part or "").strip(),
    )
    if outcome.status not in _RAN:
        return base, None
    if outcome.output_dir is None:
        return replace(base, reason="no output folder"), None
    qa, problem = _read_json(outcome.output_dir / "qa.json")
    if qa is None:
        return replace(base, reason=problem), None
    if qa.get("status") != "ok":
        return replace(base, reason=f"qa.json holds an error record: {qa.get('error', {}).get('message', '')}"), None
    bpreg, _ = _read_json(outcome.output_dir / "bpreg.json")
    tag = qa.get("body_part_examined", {}).get("bpreg_tag") or "NONE"
    dicom = qa.get("body_part_examined", {}).get("dicom") or {}
    gaps = [g for g in qa.get("gaps", []) if isinstance(g, dict)]
    score_min, score_max = _score_range(bpreg)
    row = replace(
        base, has_result=True, body_part=tag, body_part_dicom=dicom.get("defined_term", ""),
        match=body_part_match(tag, outcome.header_body_part),
        reversed_order=qa.get("reversed_slice_order", ""), spacing_plausible=qa.get("z_spacing_plausible", ""),
        z_spacing_mm=qa.get("z_spacing_mm"), expected_z_spacing_mm=qa.get("expected_z_spacing_mm"),
        score_min=score_min, score_max=score_max, landmarks=tuple(qa.get("landmarks_covered", [])),
        jumps=sum(g.get("kind") == "jump" for g in gaps), unscored_runs=sum(g.get("kind") == "unscored" for g in gaps),
        gaps=_gap_text(gaps), verdict=qa.get("verdict", ""), problems=tuple(qa.get("problems", [])),
    )
    return row, bpreg


#: qa_report.csv columns: QaRow's fields, four renamed: three to the names qa.json gives them, match to body_part_vs_header.
_CSV_NAMES = {"match": "body_part_vs_header", "reversed_order": "reversed_slice_order", "spacing_plausible": "z_spacing_plausible",
              "landmarks": "landmarks_covered"}
QA_COLUMNS = tuple(_CSV_NAMES.get(f.name, f.name) for f in fields(QaRow) if f.name != "has_result")


def _qa_csv_row(row: QaRow) -> dict[str, object]:
    """A QaRow as CSV cells: landmarks joined by spaces, problems by "; ", absent values empty."""
    cells = asdict(row)
    has_result = cells.pop("has_result")
    cells["landmarks"] = " ".join(row.landmarks)
    cells["problems"] = "; ".join(row.problems)
    if not has_result:
        cells["jumps"] = cells["unscored_runs"] = ""
    return {_CSV_NAMES.get(k, k): "" if v is None else v for k, v in cells.items()}


def write_qa_report(outcomes: Sequence[SeriesOutcome], out_dir: Path) -> tuple[Path, Path]:
    """``qa_report.csv`` and ``qa_report.html``: every series of a bodypart batch, with its verdicts or why it has none."""
    rows: list[QaRow] = []
    landmarks: dict[str, float] = {}
    for index, outcome in enumerate(_by_collection(outcomes), start=1):
        row, bpreg = qa_row(index, outcome)
        rows.append(row)
        if bpreg is not None and not landmarks:  # one model per batch: its look-up table is the same in every bpreg.json
            landmarks = landmark_scores(bpreg)
    csv_path, html_path = Path(out_dir) / QA_CSV_FILE, Path(out_dir) / QA_HTML_FILE
    write_atomic(csv_path, _csv_bytes(QA_COLUMNS, [_qa_csv_row(r) for r in rows]))
    write_atomic(html_path, render(rows, landmarks).encode("utf-8"))
    return csv_path, html_path
