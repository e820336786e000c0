"""One DICOM image series as found on disk: its files and headers, and what was done to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

#: Image Storage SOP classes accepted as CT input (PS3.4 B.5): CT Image Storage, Enhanced CT.
CT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"}
#: SOP class of CT Image Storage, used where a file declares none.
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def uid_text(value: object) -> str:
    return str(value).strip() if value is not None else ""


@dataclass
class DicomSeries:
    """One image series: its files and headers (no pixel data), in slice order once sorted.

    Attributes:
        series_instance_uid: Series Instance UID (0020,000E), generated if the source left it blank.
        study_instance_uid: Study Instance UID (0020,000D), generated if the source left it blank.
        instances: Headers of the instances, sorted by position along the slice normal (ascending).
        files: The instance files, same order as ``instances``.
        generated_uids: Names of UID attributes that were blank in the source and were replaced,
            e.g. ``["StudyInstanceUID", "SeriesInstanceUID"]``; such references point to no real
            object and every output says so.
        sop_uids_from_file_meta: SOP Class/Instance UIDs were blank in the datasets and were taken
            from the Part 10 file meta information (0002,0002)/(0002,0003).
        localizer: The images are localizers (scouts): Image Type (0008,0008) holds LOCALIZER.
        ignored: What was left out of the volume and why (duplicate files), for the report.
        missing_attributes: Type 2 attributes absent from the source that derived objects need;
            they are written empty (PS3.5 7.4), never invented.
        repairs: Other adjustments made so that derived objects are valid (``headers.py``).
    """

    series_instance_uid: str
    study_instance_uid: str
    modality: str
    description: str
    instances: list[Dataset] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    generated_uids: list[str] = field(default_factory=list)
    sop_uids_from_file_meta: bool = False
    localizer: bool = False
    ignored: list[str] = field(default_factory=list)
    missing_attributes: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)

    @property
    def is_ct(self) -> bool:
        return self.modality == "CT"

    def summary(self) -> str:
        return (
            f"{self.series_instance_uid}"
            + (" (generated: the source UID is blank)" if "SeriesInstanceUID" in self.generated_uids else "")
            + f" ({self.modality or 'no modality'}{', localizer' if self.localizer else ''}, {len(self.files)} files"
            + (f", '{self.description}'" if self.description else "")
            + ")"
        )
