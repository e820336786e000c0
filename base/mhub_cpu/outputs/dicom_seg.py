"""DICOM Segmentation objects (PS3.3 A.51) from a label map on the source series' grid."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.coding import Code

from .. import __version__
from ..auto3dseg.labels import Code as LabelCode
from ..auto3dseg.labels import Label
from ..dicomio import DicomSeries
from ..errors import ProcessingError

#: Segment Algorithm Type (0062,0008) of every segment we write.
ALGORITHM_TYPE = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
#: Segmentation types offered: BINARY (one frame per segment and slice, widest viewer support)
#: and LABELMAP (one frame per slice holding segment numbers, DICOM 2024 supplement 243).
SEGMENTATION_TYPES = ("BINARY", "LABELMAP")
#: Fallback category when a label has none: SCT 123037004 "Anatomical structure".
DEFAULT_CATEGORY = Code("123037004", "SCT", "Anatomical Structure")


def _long_string(text: str) -> str:
    """Clip to the 64 characters of a Long String (LO) value (PS3.5 6.2)."""
    return text[:64]


def _concept(code: LabelCode) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning or code.value)


def segment_descriptions(labels: list[Label], algorithm: hd.AlgorithmIdentificationSequence) -> list[hd.seg.SegmentDescription]:
    """One Segment Description (PS3.3 C.8.20.2) per label, numbered 1..n in the given order.

    The type modifier (e.g. SCT 7771000 "Left") is nested in the property type item as
    Segmented Property Type Modifier Code Sequence (0062,0011).
    """
    descriptions = []
    for number, label in enumerate(labels, start=1):
        if "type" not in label.codes:
            raise ProcessingError(f"label {label.value} ({label.name}) has no segmented property type code")
        category = _concept(label.codes["category"]) if "category" in label.codes else DEFAULT_CATEGORY
        regions = [_concept(label.codes["anatomic_region"])] if "anatomic_region" in label.codes else None
        color = hd.color.CIELabColor.from_rgb(*label.color) if label.color else None  # type: ignore[attr-defined]
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label.name,
            segmented_property_category=category,
            segmented_property_type=_concept(label.codes["type"]),
            algorithm_type=ALGORITHM_TYPE,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=label.name,
            anatomic_regions=regions,
            display_color=color,
        )
        if "type_modifier" in label.codes:
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                _concept(label.codes["type_modifier"])
            ]
        if regions and "anatomic_region_modifier" in label.codes:
            description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [
                _concept(label.codes["anatomic_region_modifier"])
            ]
        descriptions.append(description)
    return descriptions


def write_dicom_seg(
    labels_dicom_order: np.ndarray,
    series: DicomSeries,
    labels: list[Label],
    output_path: Path,
    model_name: str,
    model_version: str,
    segmentation_type: str = "BINARY",
) -> list[Label]:
    """Write a DICOM-SEG referencing ``series`` with one segment per label present.

    Args:
        labels_dicom_order: Label values, shape (slices, rows, columns), slices in the order of
            ``series.instances``.
        series: The source series (UIDs already resolved).
        labels: The model's labels; those absent from the map get no segment.
        output_path: File to write (written to a temporary name, then renamed).
        model_name, model_version: Algorithm Name/Version (0066,0036)/(0066,0031).
        segmentation_type: ``BINARY`` or ``LABELMAP``.

    Returns:
        The labels written, in segment-number order.
    """
    if segmentation_type not in SEGMENTATION_TYPES:
        raise ProcessingError(f"unknown segmentation type {segmentation_type!r}")
    expected = (len(series.instances), int(series.instances[0].Rows), int(series.instances[0].Columns))
    if labels_dicom_order.shape != expected:
        raise ProcessingError(f"label map shape {labels_dicom_order.shape} does not match the series {expected}")
    present = set(np.unique(labels_dicom_order).tolist()) - {0}
    written = [label for label in labels if label.value in present]
    unknown = present - {label.value for label in labels}
    if unknown:
        raise ProcessingError(f"label values {sorted(unknown)} are not in the model's labels.csv")
    if not written:
        raise ProcessingError("the segmentation is empty: no label was found in the image")
    # Segment numbers are 1..n in the order of `written`; remap label values to them.
    lookup = np.zeros(int(labels_dicom_order.max()) + 1, dtype=np.uint16 if len(written) > 255 else np.uint8)
    for number, label in enumerate(written, start=1):
        lookup[label.value] = number
    segment_map = lookup[labels_dicom_order]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"), version=model_version,
    )
    seg = hd.seg.Segmentation(
        source_images=series.instances,
        pixel_array=segment_map,
        segmentation_type=segmentation_type,
        segment_descriptions=segment_descriptions(written, algorithm),
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="mhub-cpu",
        manufacturer_model_name=model_name,
        software_versions=__version__,
        device_serial_number="none",
        series_description=_long_string(f"{model_name} segmentation"),
        content_label="SEGMENTATION",
        content_description=_long_string(f"{model_name} (mhub-cpu)"),
        omit_empty_frames=True,
    )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(output_path.name + ".partial")
    seg.save_as(partial)
    partial.replace(output_path)
    return written
