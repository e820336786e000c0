"""The ``labels.csv`` of an Auto3DSeg model zip: label values, names and DICOM codes.

Columns follow 3D Slicer's MONAIAuto3DSeg extension: ``LabelValue``, ``Name`` and, for each of
``SegmentedPropertyCategoryCodeSequence``, ``SegmentedPropertyTypeCodeSequence``,
``SegmentedPropertyTypeModifierCodeSequence``, ``AnatomicRegionSequence`` and
``AnatomicRegionModifierSequence``, the three columns ``.CodingSchemeDesignator``,
``.CodeValue`` and ``.CodeMeaning`` (PS3.3 C.8.20.4, Segment Description Macro).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from mhub_cpu.core.errors import ModelError

CODE_FIELDS = {
    "category": "SegmentedPropertyCategoryCodeSequence",
    "type": "SegmentedPropertyTypeCodeSequence",
    "type_modifier": "SegmentedPropertyTypeModifierCodeSequence",
    "anatomic_region": "AnatomicRegionSequence",
    "anatomic_region_modifier": "AnatomicRegionModifierSequence",
}


@dataclass(frozen=True)
class Code:
    """A coded concept (PS3.3 8.8): scheme designator, code value and meaning."""

    scheme: str
    value: str
    meaning: str

    def as_dict(self) -> dict[str, str]:
        return {"scheme": self.scheme, "value": self.value, "meaning": self.meaning}


@dataclass(frozen=True)
class Label:
    """One segment class of a model: its label value, name, codes, display colour and MHub SegDB id."""

    value: int
    name: str
    codes: dict[str, Code]
    color: tuple[int, int, int] | None = None
    segdb_id: str | None = None  #: MHub SegDB segment id (e.g. ``LIVER``), from the catalogue

    def with_defaults(self, codes: dict[str, Code], color: tuple[int, int, int] | None, segdb_id: str | None = None) -> Label:
        """This label with missing codes, colour and SegDB id filled from another source (the catalogue)."""
        merged = {**codes, **self.codes}
        return Label(self.value, self.name, merged, self.color or color, self.segdb_id or segdb_id)


def parse_labels_csv(text: str) -> list[Label]:
    """Parse ``labels.csv`` content; raise :class:`ModelError` on missing columns or bad values."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ModelError("labels.csv is empty") from None
    for required in ("LabelValue", "Name"):
        if required not in header:
            raise ModelError(f"labels.csv lacks the column {required!r} (columns: {', '.join(header)})")
    labels: list[Label] = []
    for line_number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        row = row + [""] * (len(header) - len(row))  # Slicer tolerates short rows
        cells = dict(zip(header, row))
        try:
            value = int(cells["LabelValue"])
        except ValueError:
            raise ModelError(f"labels.csv line {line_number}: LabelValue {cells['LabelValue']!r} is not an integer") from None
        if not 0 < value < 65536:
            raise ModelError(f"labels.csv line {line_number}: LabelValue {value} out of range 1..65535")
        codes = {}
        for key, prefix in CODE_FIELDS.items():
            scheme = cells.get(f"{prefix}.CodingSchemeDesignator", "").strip()
            code_value = cells.get(f"{prefix}.CodeValue", "").strip()
            if scheme and code_value:
                codes[key] = Code(scheme, code_value, cells.get(f"{prefix}.CodeMeaning", "").strip())
        labels.append(Label(value=value, name=cells["Name"].strip(), codes=codes))
    if not labels:
        raise ModelError("labels.csv lists no labels")
    values = [label.value for label in labels]
    if len(set(values)) != len(values):
        raise ModelError("labels.csv repeats a LabelValue")
    return labels


def format_labels_csv(labels: list[Label]) -> str:
    """Write labels in Slicer's ``labels.csv`` layout (inverse of :func:`parse_labels_csv`)."""
    header = ["LabelValue", "Name"]
    for prefix in CODE_FIELDS.values():
        header += [f"{prefix}.CodingSchemeDesignator", f"{prefix}.CodeValue", f"{prefix}.CodeMeaning"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for label in labels:
        row = [str(label.value), label.name]
        for key in CODE_FIELDS:
            code = label.codes.get(key)
            row += [code.scheme, code.value, code.meaning] if code else ["", "", ""]
        writer.writerow(row)
    return out.getvalue()
