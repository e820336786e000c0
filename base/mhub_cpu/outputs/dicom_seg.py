"""DICOM Segmentation objects (PS3.3 A.51) from a label map on the source series' grid."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
from pydicom.sr.coding import Code

from mhub_cpu import __version__
from mhub_cpu.auto3dseg.labels import Code as LabelCode
from mhub_cpu.auto3dseg.labels import Label
from mhub_cpu.core.errors import ProcessingError
from mhub_cpu.core.progress import log
from mhub_cpu.dicomio.geometry import to_dicom_order
from mhub_cpu.dicomio.series import DicomSeries
from mhub_cpu.outputs.binary_frames import stand_in_map, write_binary_segmentation

#: Segment Algorithm Type (0062,0008) of every segment we write.
ALGORITHM_TYPE = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC


class SegmentationType(StrEnum):
    """Segmentation Type (0062,0001) written (``--seg-type``)."""

    BINARY = "BINARY"  #: one frame per segment and slice; the widest viewer support
    LABELMAP = "LABELMAP"  #: one frame per slice holding segment numbers (DICOM 2024, Supplement 243)


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
        color = hd.color.CIELabColor.from_rgb(*label.color) if label.color else None
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


def segment_number_map(labels_image: nib.Nifti1Image, series: DicomSeries, labels: list[Label]) -> tuple[np.ndarray, list[Label]]:
    """The label map in the series' pixel order (slice, row, column) as segment numbers 1..n, and
    the labels present, in segment-number order (``labels``' order).

    Raises:
        ProcessingError: the map does not fit the series, holds values ``labels`` lacks, or is empty.
    """
    labels_dicom_order = to_dicom_order(np.asarray(labels_image.dataobj), labels_image.affine, series.instances)
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
    return lookup[labels_dicom_order], written


def highdicom_segmentation(
    segment_map: np.ndarray,
    series: DicomSeries,
    written: list[Label],
    model_name: str,
    model_version: str,
    segmentation_type: SegmentationType,
) -> hd.seg.Segmentation:
    """highdicom's Segmentation of ``segment_map`` (from :func:`segment_number_map`), frames and all."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"), version=model_version,
    )
    return hd.seg.Segmentation(
        source_images=series.instances,
        pixel_array=segment_map,
        segmentation_type=segmentation_type.value,
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


def write_dicom_seg(
    labels_image: nib.Nifti1Image,
    series: DicomSeries,
    labels: list[Label],
    output_path: Path,
    model_name: str,
    model_version: str,
    segmentation_type: SegmentationType = SegmentationType.BINARY,
) -> list[Label]:
    """Write a DICOM-SEG referencing ``series`` with one segment per label present.

    BINARY with several segments has its frames encoded by :mod:`.binary_frames` (the same frames
    highdicom writes, several times faster); one segment, and LABELMAP, are highdicom's throughout.

    Args:
        labels_image: Label values on the series' grid (any axis order; see
            :func:`~mhub_cpu.dicomio.geometry.to_dicom_order`).
        series: The source series (UIDs already resolved).
        labels: The model's labels; those absent from the map get no segment.
        output_path: File to write (written to a temporary name, then renamed).
        model_name, model_version: Algorithm Name/Version (0066,0036)/(0066,0031).
        segmentation_type: Binary or label-map frames.

    Returns:
        The labels written, in segment-number order.
    """
    segment_map, written = segment_number_map(labels_image, series, labels)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(output_path.name + ".partial")
    try:
        if segmentation_type is SegmentationType.BINARY and len(written) > 1:
            template = highdicom_segmentation(
                stand_in_map(segment_map, len(written)), series, written, model_name, model_version, segmentation_type,
            )
            frames = write_binary_segmentation(template, segment_map, series.instances, partial)
        else:
            seg = highdicom_segmentation(segment_map, series, written, model_name, model_version, segmentation_type)
            seg.save_as(partial)
            frames = int(seg.NumberOfFrames)
        partial.replace(output_path)
    finally:
        partial.unlink(missing_ok=True)
    log(f"DICOM-SEG: {len(written)} segments, {frames} {segmentation_type.value} frames")
    return written
