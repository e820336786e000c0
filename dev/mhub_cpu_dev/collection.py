"""A small synthetic collection built from the sample series in data/, for the batch tests.

Laid out as collections arrive (several sites, studies and series, nested folders, clutter)::

    ROOT/README.txt, ROOT/.DS_Store                        not DICOM
    ROOT/site-a/study-1/abdomen/                           the sample CT, new UIDs          -> done
    ROOT/site-a/study-1/follow-up/nested/deeper/chest/     the sample CT, new UIDs, the
                                                           header says BodyPartExamined CHEST -> done
    ROOT/site-a/notes.json                                 not DICOM
    ROOT/site-b/scanner/                                   the real scanner series, blank
                                                           Study/Series UIDs (generated)    -> done
    ROOT/site-b/study-2/mr/                                10 sample slices as Modality MR  -> not run
    ROOT/site-b/study-2/one-slice/                         one sample slice                 -> failed
    ROOT/site-b/study-2/truncated/                         10 sample slices, one truncated  -> failed
    ROOT/site-b/junk.dcm                                   the DICM marker, then text       -> not run

Every UID is derived from a seed, so the same call builds the same collection.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from mhub_cpu_dev.data import SAMPLE_DICOM, SCANNER_DICOM

#: The real scanner series (Siemens, JPEG 2000, blank Study/Series/SOP UIDs in the datasets).


@dataclass(frozen=True)
class SyntheticSeries:
    """One series of the collection and what a batch should make of it.

    ``study_uid``/``series_uid`` are None where the source leaves them blank (generated in a run).
    """

    name: str
    folder: Path
    study_uid: str | None
    series_uid: str | None
    expected: str  #: "done", "failed" or "not run"
    reason: str = ""  #: a fragment of the reason a batch gives ("" for done)


def _uid(seed: str, *parts: str) -> str:
    return generate_uid(entropy_srcs=[seed, *parts])


def _copy(source_files: list[Path], target: Path, study: str, series: str, seed: str, **overrides: object) -> list[Path]:
    """Copies of ``source_files`` in ``target`` as one new series: new Study/Series/SOP UIDs."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in source_files:
        dataset = pydicom.dcmread(path)
        dataset.StudyInstanceUID = study
        dataset.SeriesInstanceUID = series
        dataset.SOPInstanceUID = _uid(seed, series, path.name)
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        for keyword, value in overrides.items():
            setattr(dataset, keyword, value)
        out = target / path.name
        dataset.save_as(out, enforce_file_format=True)
        written.append(out)
    return written


def build_collection(root: Path, seed: str = "mhub-cpu synthetic collection") -> dict[str, SyntheticSeries]:
    """Write the collection under ``root`` (created) and return its series by name."""
    root = Path(root)
    sample = sorted(SAMPLE_DICOM.iterdir())
    study_1, study_2 = _uid(seed, "study-1"), _uid(seed, "study-2")
    listing = [
        SyntheticSeries("abdomen", root / "site-a/study-1/abdomen", study_1, _uid(seed, "abdomen"), "done"),
        SyntheticSeries("chest-header", root / "site-a/study-1/follow-up/nested/deeper/chest", study_1, _uid(seed, "chest"), "done"),
        SyntheticSeries("scanner", root / "site-b/scanner", None, None, "done"),
        SyntheticSeries("mr", root / "site-b/study-2/mr", study_2, _uid(seed, "mr"), "not run", "not CT (Modality MR)"),
        SyntheticSeries("one-slice", root / "site-b/study-2/one-slice", study_2, _uid(seed, "one-slice"), "failed", "has 1 image"),
        SyntheticSeries("truncated", root / "site-b/study-2/truncated", study_2, _uid(seed, "truncated"), "failed", "truncated DICOM file"),
        SyntheticSeries("junk", root / "site-b", None, None, "not run", "not an image series"),
    ]
    series = {entry.name: entry for entry in listing}

    def copy(name: str, files: list[Path], **overrides: object) -> list[Path]:
        entry = series[name]
        assert entry.study_uid is not None and entry.series_uid is not None
        return _copy(files, entry.folder, entry.study_uid, entry.series_uid, seed, **overrides)

    copy("abdomen", sample)
    copy("chest-header", sample, BodyPartExamined="CHEST")
    shutil.copytree(SCANNER_DICOM, series["scanner"].folder)
    copy("mr", sample[40:50], Modality="MR")
    copy("one-slice", sample[60:61])
    truncated = copy("truncated", sample[40:50])[4]
    truncated.write_bytes(truncated.read_bytes()[:-3000])
    (root / "site-b" / "junk.dcm").write_bytes(bytes(128) + b"DICM" + b"not a DICOM data set, only its marker\n" * 4)
    (root / "README.txt").write_text("exported from a PACS\n")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (root / "site-a" / "notes.json").write_text('{"note": "not DICOM"}\n')
    return series
