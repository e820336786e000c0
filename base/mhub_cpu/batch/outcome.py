"""One series' row of a batch: shared by the batch runner, which fills it, and the reports, which read it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Status(StrEnum):
    """What happened to a series in a batch."""

    DONE = "done"
    SKIPPED = "skipped"  #: complete from an earlier run
    FAILED = "failed"
    NOT_RUN = "not run"  #: not CT, localizer only, duplicate, ...
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class SeriesOutcome:
    """One series' row of a batch: where it came from, what happened, where its outputs are."""

    input_root: Path  #: the --input root the series was found under
    study_uid: str
    series_uid: str
    status: Status
    reason: str  #: "" when done/skipped
    output_dir: Path | None  #: OUT/<StudyInstanceUID>/<SeriesInstanceUID>/ when run, else None
    header_body_part: str | None  #: BodyPartExamined (0018,0015) of the series' files, None when absent/blank
    modality: str | None
    series_description: str | None
    files: int
