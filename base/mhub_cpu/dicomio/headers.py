"""Source headers made fit to be copied into derived objects (DICOM-SEG, SR), as scanners write them.

highdicom copies the Patient and General Study modules, the Frame of Reference and the Specific
Character Set of the source into every derived object. Real files leave Type 2 attributes out,
write an empty or unknown Specific Character Set, overlong names, zero-item sequences, or no
Slice Thickness. A derived object must still be valid (PS3.3, checked with dciodvfy), and nothing
may be invented, so the headers held in memory (never the files) are adjusted as follows, and
every adjustment is recorded in :attr:`DicomSeries.repairs` for the report:

* absent Type 2 attributes of the Patient / General Study modules are written empty (PS3.5 7.4);
* text is decoded with the source's own character set; when that set is absent or empty with
  non-ASCII text, unknown, or an ISO 2022 code-extension set, derived objects are written in
  UTF-8 (``ISO_IR 192``), which represents every source text;
* copied values longer than their VR allows (PN 64 per component group, LO 64, SH 16) are clipped;
* zero-item Type 3 sequences (not allowed: PS3.5 7.5.1 requires 1-n items when present) are dropped;
* an absent or empty Slice Thickness (0018,0050; Type 1C in the SEG's Pixel Measures) is the
  spacing between slice centres, measured from the positions;
* a blank Frame of Reference UID (0020,0052) is generated like the other blank UIDs.
"""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mhub_cpu.core.progress import log
from mhub_cpu.dicomio.geometry import slice_normal
from mhub_cpu.dicomio.series import DicomSeries
from mhub_cpu.dicomio.uids import derived_uid, instance_entropy

#: Type 2 attributes of the Patient and General Study modules that derived objects copy.
COPIED_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
#: Specific Character Set terms highdicom writes (``highdicom.enum.SpecificCharacterSetValues``),
#: without the ISO 2022 code-extension terms, whose multi-valued forms it does not accept.
WRITABLE_CHARACTER_SETS = (
    "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 144", "ISO_IR 127", "ISO_IR 126",
    "ISO_IR 138", "ISO_IR 148", "ISO_IR 203", "ISO_IR 13", "ISO_IR 166", "ISO_IR 192", "GB18030", "GBK",
)
UTF8 = "ISO_IR 192"
#: Maximum value length per VR (PS3.5 table 6.2-1); PN per component group.
MAX_LENGTH = {"PN": 64, "LO": 64, "SH": 16}
TEXT_VRS = ("PN", "LO", "SH", "ST", "LT", "UT", "UC")


def prepare_headers(series: DicomSeries) -> None:
    """Adjust the in-memory headers of ``series`` so that derived objects copy valid values."""
    _character_set(series)
    for keyword in COPIED_TYPE2:
        absent = [ds for ds in series.instances if keyword not in ds]
        if absent:
            series.missing_attributes.append(keyword)
            for dataset in absent:
                dataset.add_new(keyword, pydicom.datadict.dictionary_VR(keyword), None)
    if series.missing_attributes:
        log("note: absent in the source, written empty: " + ", ".join(series.missing_attributes))
    for keyword in COPIED_TYPE2:
        _clip(series, keyword)
    _drop_empty_sequences(series)
    _slice_thickness(series)
    if not str(series.instances[0].get("FrameOfReferenceUID", "") or "").strip():
        uid = derived_uid(instance_entropy(series), "frame of reference")
        for dataset in series.instances:
            dataset.FrameOfReferenceUID = uid
        series.generated_uids.append("FrameOfReferenceUID")
        log("warning: blank Frame of Reference UID in the source; generated a replacement")
    for repair in series.repairs:
        log(f"note: {repair}")


def _character_set(series: DicomSeries) -> None:
    first = series.instances[0]
    present = "SpecificCharacterSet" in first
    raw = first.get("SpecificCharacterSet")
    listed = raw if isinstance(raw, (list, pydicom.multival.MultiValue)) else [raw]
    values = [str(v).strip() for v in listed if v is not None and str(v).strip()]
    for dataset in series.instances:
        dataset.decode()  # text to str with the source's own character set
    if len(values) == 1 and values[0] in WRITABLE_CHARACTER_SETS:
        return
    if not values and _ascii(first):  # the default repertoire (an empty value is left out)
        for dataset in series.instances:
            if "SpecificCharacterSet" in dataset:
                del dataset.SpecificCharacterSet
        return
    for dataset in series.instances:
        dataset.SpecificCharacterSet = UTF8
    shown = "\\".join(values) if values else ("empty" if present else "absent")
    series.repairs.append(f"Specific Character Set {shown!s} of the source: derived objects are written in UTF-8 ({UTF8})")


def _ascii(dataset: Dataset) -> bool:
    return all(str(element.value).isascii() for element in dataset if element.VR in TEXT_VRS and element.value is not None)


def _clip(series: DicomSeries, keyword: str) -> None:
    vr = pydicom.datadict.dictionary_VR(keyword)
    limit = MAX_LENGTH.get(vr)
    value = series.instances[0].get(keyword)
    if limit is None or value is None:
        return
    if vr == "PN":
        groups = str(value).split("=")
        if all(len(group) <= limit for group in groups):
            return
        clipped: object = "=".join(group[:limit] for group in groups)
    else:
        if len(str(value)) <= limit:
            return
        clipped = str(value)[:limit]
    for dataset in series.instances:
        setattr(dataset, keyword, clipped)
    series.repairs.append(f"{keyword} is longer than its VR {vr} allows ({limit} characters): clipped in derived objects")


def _drop_empty_sequences(series: DicomSeries) -> None:
    dropped = sorted({
        element.keyword for dataset in series.instances for element in dataset
        if element.VR == "SQ" and isinstance(element.value, Sequence) and len(element.value) == 0 and element.keyword
    })
    for dataset in series.instances:
        for keyword in dropped:
            if keyword in dataset:
                delattr(dataset, keyword)
    if dropped:
        series.repairs.append("sequences without items (not allowed when present) left out: " + ", ".join(dropped))


def _slice_thickness(series: DicomSeries) -> None:
    def valid(dataset: Dataset) -> bool:
        try:
            return float(dataset.get("SliceThickness") or 0) > 0
        except (TypeError, ValueError):
            return False

    if all(valid(dataset) for dataset in series.instances):
        return
    normal = slice_normal(series.instances[0])
    positions = [float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])) for ds in series.instances]
    spacing = round(float(np.median(np.diff(positions))), 6)
    for dataset in series.instances:
        if not valid(dataset):
            dataset.SliceThickness = spacing
    series.repairs.append(
        f"Slice Thickness (0018,0050) absent or empty in the source: derived objects state the slice spacing, {spacing:g} mm"
    )
