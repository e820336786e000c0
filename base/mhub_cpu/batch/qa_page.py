"""The collection QA page of a ``batch bodypart`` run: one self-contained HTML file.

A reviewer opens it from a shared folder, an e-mail or an archive, often offline and with scripts
blocked, so it has no scripts and references no file or URL: CSS is inline, the plots are SVG drawn
here, and every piece of text from a header or a report is escaped.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

#: Colours the browser test looks for in a screenshot (plot bars, table headers, background).
PASS_COLOUR = "#2e7d32"
REVIEW_COLOUR = "#e65100"
FINDING_COLOUR = "#3949ab"
HEADER_COLOUR = "#1f3b73"
BACKGROUND_COLOUR = "#ffffff"

#: Body part (ours) against the header's Body Part Examined.
MATCH_STATES = ("match", "mismatch", "header missing", "undetermined")

_STYLE = f"""
body {{ background: {BACKGROUND_COLOUR}; color: #222; font: 13px/1.4 sans-serif; margin: 16px; }}
h1 {{ font-size: 20px; margin: 0 0 8px; }} h2 {{ font-size: 16px; margin: 20px 0 6px; }}
table {{ border-collapse: collapse; margin: 4px 0 12px; }}
th {{ background: {HEADER_COLOUR}; color: #fff; text-align: left; padding: 3px 6px; font-weight: 600; }}
td {{ border-bottom: 1px solid #ddd; padding: 3px 6px; vertical-align: top; }}
td.uid {{ font-family: monospace; font-size: 11px; word-break: break-all; max-width: 180px; }}
.summary {{ display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }}
.plot {{ overflow-x: auto; }}
.mismatch, .review, .failed {{ color: {REVIEW_COLOUR}; font-weight: 600; }}
.pass, .match {{ color: {PASS_COLOUR}; }}
"""


@dataclass(frozen=True)
class QaRow:
    """What the report shows of one series: the batch outcome and, when it ran, its qa.json verdicts."""

    index: int  #: 1-based number, the same in the CSV, the tables and the plot
    input_root: str
    study_uid: str
    series_uid: str
    series_description: str
    modality: str
    files: int
    status: str
    reason: str  #: why a series did not run or failed, or why its results could not be read
    output_dir: str
    header_body_part: str  #: "" when the header has none
    has_result: bool = False  #: a readable qa.json with "status": "ok"
    body_part: str = ""  #: bpreg's tag (NONE when undetermined)
    body_part_dicom: str = ""  #: the DICOM defined term for it, "" where the standard has none
    match: str = ""  #: one of MATCH_STATES; "" without a result
    reversed_order: str = ""
    spacing_plausible: str = ""
    z_spacing_mm: float | None = None
    expected_z_spacing_mm: float | None = None
    score_min: float | None = None  #: lowest cleaned slice score (bpreg.json)
    score_max: float | None = None
    landmarks: tuple[str, ...] = ()
    jumps: int = 0
    unscored_runs: int = 0
    gaps: str = ""  #: e.g. "jump 59-60; unscored 0-3"
    verdict: str = ""  #: pass / review; "" without a result
    problems: tuple[str, ...] = ()

    @property
    def outcome(self) -> str:
        """The verdict where there is one, else what happened (failed, not run, no result, ...)."""
        if self.has_result:
            return self.verdict
        return "no result" if self.status in ("done", "skipped") else self.status


def findings(rows: Sequence[QaRow]) -> dict[str, int]:
    """Number of series with each kind of finding, in the order a reviewer works through them."""
    return {
        "body part mismatch": sum(r.match == "mismatch" for r in rows),
        "header missing": sum(r.match == "header missing" for r in rows),
        "body part undetermined": sum(r.match == "undetermined" for r in rows),
        "reversed slice order": sum(r.reversed_order == "yes" for r in rows),
        "z-spacing implausible": sum(r.spacing_plausible == "no" for r in rows),
        "anatomy missing (jump)": sum(r.jumps > 0 for r in rows),
        "unscored slices": sum(r.unscored_runs > 0 for r in rows),
        "no result": sum(r.outcome == "no result" for r in rows),
        "failed or interrupted": sum(r.status in ("failed", "interrupted") for r in rows),
        "not run": sum(r.status == "not run" for r in rows),
    }


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _count_table(title: str, counts: Counter[str], order: Sequence[str]) -> str:
    keys = [k for k in order if counts[k]] + sorted(k for k in counts if k not in order)
    body = "".join(f'<tr><td class="{_e(k)}">{_e(k)}</td><td>{counts[k]}</td></tr>' for k in keys)
    return f"<table><tr><th>{_e(title)}</th><th>series</th></tr>{body}</table>"


def score_plot(rows: Sequence[QaRow], landmarks: dict[str, float]) -> str:
    """Score range of each series as a vertical bar, feet at the bottom, head at the top, over the landmarks."""
    scored = [(r, r.score_min, r.score_max) for r in rows if r.score_min is not None and r.score_max is not None]
    values = [*landmarks.values(), *(lo for _, lo, _ in scored), *(hi for _, _, hi in scored)]
    low = min([0.0, *values]) - 5
    high = max([100.0, *values]) + 5
    slot = max(4.0, min(28.0, 900.0 / max(len(scored), 1)))
    left, top, plot_h = 120.0, 16.0, 380.0
    width = max(left + slot * max(len(scored), 1) + 20, 640.0)
    height = top + plot_h + 40

    def y(score: float) -> float:
        return top + (high - score) / (high - low) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" role="img" '
        f'aria-label="score range per series">',
        f'<text x="4" y="{top + 10:.1f}" font-size="11" fill="#555">head</text>',
        f'<text x="4" y="{top + plot_h:.1f}" font-size="11" fill="#555">feet</text>',
    ]
    last_label_y = -1e9
    for name, score in sorted(landmarks.items(), key=lambda item: -item[1]):
        ly = y(score)
        parts.append(f'<line x1="{left:.1f}" x2="{width - 10:.1f}" y1="{ly:.1f}" y2="{ly:.1f}" stroke="#e0e0e0" stroke-width="1"/>')
        if ly - last_label_y >= 11:  # label only landmarks that do not overlap the one above
            parts.append(f'<text x="{left - 4:.1f}" y="{ly + 4:.1f}" font-size="10" text-anchor="end" fill="#555">{_e(name)}</text>')
            last_label_y = ly
    label_every = max(1, round(14 / slot))
    for i, (row, lowest, highest) in enumerate(scored):
        x = left + i * slot + slot * 0.2
        y_top, y_bottom = y(highest), y(lowest)
        colour = PASS_COLOUR if row.verdict == "pass" else REVIEW_COLOUR
        tip = f"#{row.index} {row.series_uid} ({row.series_description}): {lowest:.1f} to {highest:.1f}, {row.verdict}"
        parts.append(
            f'<rect x="{x:.1f}" y="{y_top:.1f}" width="{slot * 0.6:.1f}" height="{max(y_bottom - y_top, 1.0):.1f}" '
            f'fill="{colour}"><title>{_e(tip)}</title></rect>'
        )
        if i % label_every == 0:
            parts.append(f'<text x="{x + slot * 0.3:.1f}" y="{top + plot_h + 14:.1f}" font-size="10" text-anchor="middle">{row.index}</text>')
    parts.append(f'<text x="{left:.1f}" y="{height - 6:.1f}" font-size="11" fill="#555">series # (bar: lowest to highest slice score; '
                 f'green pass, orange review; lines: landmarks)</text>')
    parts.append("</svg>")
    return "".join(parts)


def findings_plot(counts: dict[str, int]) -> str:
    """Horizontal bars: how many series have each kind of finding."""
    left, bar_w, row_h = 190.0, 360.0, 22.0
    most = max([1, *counts.values()])
    height = row_h * len(counts) + 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + bar_w + 60:.0f}" height="{height:.0f}" role="img" aria-label="findings per kind">']
    for i, (kind, count) in enumerate(counts.items()):
        y = 4 + i * row_h
        parts.append(f'<text x="{left - 6:.1f}" y="{y + 15:.1f}" font-size="12" text-anchor="end">{_e(kind)}</text>')
        w = bar_w * count / most
        if count:
            parts.append(f'<rect x="{left:.1f}" y="{y + 3:.1f}" width="{w:.1f}" height="{row_h - 6:.1f}" fill="{FINDING_COLOUR}"/>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 15:.1f}" font-size="12">{count}</text>')
    parts.append("</svg>")
    return "".join(parts)


_COLUMNS = ("#", "study UID", "series UID", "description", "files", "status", "body part", "header", "vs header",
            "reversed", "z-spacing mm (expected)", "scores", "landmarks", "gaps", "verdict", "problems / reason")


def _row_html(row: QaRow) -> str:
    spacing = ""
    if row.z_spacing_mm is not None:
        spacing = f"{_number(row.z_spacing_mm, 2)} ({_number(row.expected_z_spacing_mm, 2)}) {row.spacing_plausible}"
    scores = f"{_number(row.score_min)} to {_number(row.score_max)}" if row.score_min is not None else ""
    landmarks = f"{row.landmarks[0]} to {row.landmarks[-1]} ({len(row.landmarks)})" if row.landmarks else ""
    body_part = row.body_part + (f" ({row.body_part_dicom})" if row.body_part_dicom and row.body_part_dicom != row.body_part else "")
    notes = "; ".join(filter(None, [*row.problems, row.reason]))
    cells = [
        (str(row.index), ""), (row.study_uid, "uid"), (row.series_uid, "uid"), (row.series_description, ""), (str(row.files), ""),
        (row.status, row.status), (body_part, ""), (row.header_body_part, ""), (row.match, row.match), (row.reversed_order, ""),
        (spacing, ""), (scores, ""), (landmarks, ""), (row.gaps, ""), (row.outcome, row.outcome), (notes, ""),
    ]
    return "<tr>" + "".join(f'<td class="{_e(cls)}">{_e(text)}</td>' if cls else f"<td>{_e(text)}</td>" for text, cls in cells) + "</tr>"


def collection_table(root: str, rows: Sequence[QaRow]) -> str:
    """One collection (``--input`` root): a heading with its counts and one table row per series."""
    counts = Counter(r.outcome for r in rows)
    summary = ", ".join(f"{n} {k}" for k, n in counts.most_common())
    head = "".join(f"<th>{_e(c)}</th>" for c in _COLUMNS)
    body = "".join(_row_html(r) for r in rows)
    return f"<h2>{_e(root)}</h2><p>{len(rows)} series: {_e(summary)}</p><table><tr>{head}</tr>{body}</table>"


def render(rows: Sequence[QaRow], landmarks: dict[str, float]) -> str:
    """The whole page: counts, the two plots, one table per collection."""
    title = "Collection QA report"
    roots = list(dict.fromkeys(r.input_root for r in rows))
    counts = findings(rows)
    outcome_counts = Counter(r.outcome for r in rows)
    match_counts = Counter(r.match for r in rows if r.match)
    summary = (
        f"<p>{len(rows)} series in {len(roots)} collection{'s' if len(roots) != 1 else ''}; body part regression "
        f"(mhub-cpu batch bodypart). Body part is ours against the header's Body Part Examined (0018,0015).</p>"
        '<div class="summary">'
        + _count_table("verdict", outcome_counts, ("pass", "review", "no result", "failed", "interrupted", "not run"))
        + _count_table("body part vs header", match_counts, MATCH_STATES)
        + "</div>"
    )
    plots = (
        "<h2>Score range per series, feet to head</h2>"
        f'<div class="plot">{score_plot(rows, landmarks)}</div>'
        f"<h2>Findings per kind</h2><div class=\"plot\">{findings_plot(counts)}</div>"
    )
    tables = "".join(collection_table(root, [r for r in rows if r.input_root == root]) for root in roots)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_STYLE}</style></head>'
        f"<body><h1>{_e(title)}</h1>{summary}{plots}{tables}</body></html>\n"
    )
