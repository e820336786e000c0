"""The QA page rendered by a real browser: headless Debian Chromium takes a screenshot, and the plots,
the table headers and the white page must each cover their share of it (``make test-browser``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from mhub_cpu.batch.outcome import SeriesOutcome, Status
from mhub_cpu.batch.qa_page import BACKGROUND_COLOUR, FINDING_COLOUR, HEADER_COLOUR, PASS_COLOUR, REVIEW_COLOUR
from mhub_cpu.batch.reports import write_qa_report
from mhub_cpu_dev.standins.bodypart import LANDMARK_MEANS

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (apt-get install chromium)
WINDOW = (1200, 1600)

#: Share of the screenshot's pixels each colour must cover: (lowest, highest).
SHARES = {  # measured 2026-12-01, Chromium 156: 0.867, 0.059, 0.0049, 0.0036, 0.0112
    BACKGROUND_COLOUR: (0.60, 0.95),
    HEADER_COLOUR: (0.03, 0.10),
    PASS_COLOUR: (0.0025, 0.02),
    REVIEW_COLOUR: (0.0018, 0.02),
    FINDING_COLOUR: (0.005, 0.03),
}


def series_outputs(folder: Path, lowest: float, highest: float, verdict: str, tag: str) -> Path:
    """qa.json and bpreg.json of one scored series, as ``mhub-cpu bodypart`` writes them (the fields the report reads)."""
    folder.mkdir(parents=True)
    scores = list(np.linspace(lowest, highest, 80))
    landmarks = [name for name, score in sorted(LANDMARK_MEANS.items(), key=lambda item: item[1]) if lowest < score < highest]
    review = verdict == "review"
    qa = {
        "status": "ok", "body_part_examined": {"bpreg_tag": tag, "dicom": {"defined_term": tag.replace("-", "")}},
        "reversed_slice_order": "yes" if review else "no", "z_spacing_plausible": "yes", "z_spacing_mm": 3.0,
        "expected_z_spacing_mm": 3.1, "landmarks_covered": landmarks,
        "gaps": [{"kind": "jump", "first_slice": 40, "last_slice": 41}] if review else [],
        "verdict": verdict, "problems": ["reversed slice order: yes", "anatomy missing between slices"] if review else [],
    }
    bpreg = {"cleaned slice scores": [None, *scores, None], "look-up table": {k: {"mean": v, "std": 2.0} for k, v in LANDMARK_MEANS.items()}}
    (folder / "qa.json").write_text(json.dumps(qa))
    (folder / "bpreg.json").write_text(json.dumps(bpreg))
    return folder


def page(tmp_path: Path) -> Path:
    """A report of two collections: eight scored series (five pass, three review), one failed, one not run."""
    specs = [(0, 30, "pass", "PELVIS"), (25, 55, "pass", "ABDOMEN"), (28, 80, "review", "CHEST-ABDOMEN"), (40, 78, "pass", "CHEST"),
             (-10, 60, "pass", "ABDOMEN-PELVIS"), (70, 105, "review", "HEAD-NECK"), (20, 50, "pass", "ABDOMEN"), (45, 90, "review", "NECK-CHEST")]
    outcomes = []
    for i, (lowest, highest, verdict, tag) in enumerate(specs):
        root = tmp_path / ("collection_a" if i < 5 else "collection_b")
        output = series_outputs(tmp_path / "out" / f"1.2.{i}", lowest, highest, verdict, tag)
        outcomes.append(SeriesOutcome(root, "1.2", f"1.2.{i}", Status.DONE, "", output, "ABDOMEN" if i % 3 else None, "CT", f"series {i}", 80))
    outcomes.append(SeriesOutcome(tmp_path / "collection_a", "1.2", "1.2.8", Status.FAILED, "exit 2: missing slice", None, "CHEST", "CT", "broken", 79))
    outcomes.append(SeriesOutcome(tmp_path / "collection_b", "1.2", "1.2.9", Status.NOT_RUN, "not CT (Modality MR)", None, None, "MR", "mr", 30))
    return write_qa_report(outcomes, tmp_path / "reports")[1]


def screenshot(html: Path, png: Path, profile: Path) -> np.ndarray:
    """RGB pixels (uint8) of the page as headless Chromium renders it, offline and without a GPU."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium) to run the browser test"
    result = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
         f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}", html.as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0 and png.exists(), result.stderr[-2000:]
    pixels = imread(png)
    return np.round(pixels[..., :3] * 255).astype(np.uint8)


def share(pixels: np.ndarray, colour: str, tolerance: int = 8) -> float:
    """Fraction of pixels within ``tolerance`` of ``colour`` (#rrggbb) in every channel."""
    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return float(np.all(np.abs(pixels.astype(np.int16) - target) <= tolerance, axis=-1).mean())


def test_qa_page_renders_in_chromium(tmp_path):
    pixels = screenshot(page(tmp_path), tmp_path / "page.png", tmp_path / "profile")
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    measured = {colour: share(pixels, colour) for colour in SHARES}
    print("shares of the screenshot:", {c: round(v, 4) for c, v in measured.items()})
    for colour, (lowest, highest) in SHARES.items():
        assert lowest <= measured[colour] <= highest, (colour, measured[colour], (lowest, highest))
