"""BINARY DICOM-SEG frames encoded here rather than by highdicom: functional groups and bit-packed pixels.

highdicom builds the Per-Frame Functional Groups of a Segmentation one pydicom Dataset per frame
and packs the frames one at a time; for a whole-body map (117 segments, ~38,000 frames) that is
nearly all of the time it takes. Here whatever repeats is built and encoded once: per slice its Derivation
Image and Plane Position items, per segment its Segment Identification item, and one Frame Content
item whose Dimension Index Values are patched per frame. Pixels are bit-packed with NumPy, chunks
of frames in threads, and streamed to the file.

highdicom still writes everything else (the modules, segment descriptions, references, dimension
index): it builds the Segmentation from :func:`stand_in_map`, one voxel per segment, and
:func:`write_binary_segmentation` replaces that object's frames with the real ones. The frames are
exactly those highdicom writes for the full map (the tests compare both): by segment, then planes
ascending along highdicom's slice normal; planes where no segment is present are left out and the
plane's Dimension Index Value counts only the planes kept; a segment gets a frame only on the planes
where it is present.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import highdicom as hd
import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from mhub_cpu.core.errors import ProcessingError

#: The elements of each Per-Frame Functional Groups item highdicom writes for a BINARY SEG on a
#: series of single-frame images, in tag order (the order they are encoded in an item).
PER_FRAME_KEYWORDS = ("DerivationImageSequence", "FrameContentSequence", "PlanePositionSequence", "SegmentIdentificationSequence")
#: Dimension Index Values patched into the Frame Content template: unlikely bytes, found once.
_SENTINEL = (0x5E6A1C01, 0x5E6A1C02)
#: Boolean pixels compared and packed per task: a few cache-sized frames beat larger chunks.
CHUNK_PIXELS = 1 << 19
#: Largest value a 32-bit length field can hold (0xFFFFFFFF means undefined length).
MAX_LENGTH = 0xFFFFFFFE

_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
_SEQUENCE_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
_PFFG_HEADER = struct.pack("<HH", 0x5200, 0x9230) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF)


def stand_in_map(segment_map: np.ndarray, number_of_segments: int) -> np.ndarray:
    """A map of the same grid with one voxel of each segment 1..n (the first n voxels), so that
    highdicom builds every attribute of the Segmentation but its frames in a few milliseconds."""
    stand_in = np.zeros_like(segment_map)
    stand_in.reshape(-1)[:number_of_segments] = np.arange(1, number_of_segments + 1, dtype=segment_map.dtype)
    return stand_in


@dataclass(frozen=True)
class FramePlan:
    """The frames of a BINARY SEG, in file order: for frame ``i``, the plane ``planes[i]`` of the
    map (an index into the source images), its segment number and its plane's Dimension Index Value."""

    planes: np.ndarray
    segments: np.ndarray
    plane_index_values: np.ndarray

    def __len__(self) -> int:
        return len(self.planes)


def highdicom_plane_order(positions: Sequence[hd.PlanePositionSequence], image_orientation: Sequence[float]) -> np.ndarray:
    """Indices of the planes (highdicom's plane positions of the source images) ascending along the
    normal highdicom sorts planes by.

    highdicom's normal is column × row direction (its volume index convention), the opposite of
    the row × column normal the series is sorted by, so this is usually the series reversed.
    """
    values = np.array([position[0].ImagePositionPatient for position in positions], dtype=np.float64)
    normal = hd.spatial.get_normal_vector(image_orientation, index_convention=hd.spatial.VOLUME_INDEX_CONVENTION)
    _, order = np.unique(normal[None] @ values.T, return_index=True)  # highdicom's sort; it refuses equal positions
    return order


def plan_frames(segment_map: np.ndarray, number_of_segments: int, plane_order: np.ndarray) -> FramePlan:
    """The frames highdicom writes for ``segment_map`` (slice, row, column; 0 = background) when
    empty frames are omitted, planes taken in ``plane_order``."""
    present = np.stack([np.bincount(plane.ravel(), minlength=number_of_segments + 1)[1 : number_of_segments + 1] > 0 for plane in segment_map])
    present = present[plane_order]  # (plane in highdicom's order, segment)
    plane_index_values = np.cumsum(present.any(axis=1))  # 1-based rank among the planes kept
    segment_indices, sorted_planes = np.nonzero(present.T)  # segment-major, then planes ascending
    return FramePlan(
        planes=plane_order[sorted_planes],
        segments=(segment_indices + 1).astype(segment_map.dtype),
        plane_index_values=plane_index_values[sorted_planes],
    )


def _encode(element: DataElement, encodings: str | list[str]) -> bytes:
    """One data element in Explicit VR Little Endian, as pydicom writes it into a file."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_data_element(buffer, element, encodings)
    return bytes(buffer.getvalue())


def _with(item: Dataset, *elements: DataElement) -> Dataset:
    """A new item with ``item``'s elements, ``elements`` replacing or added. The elements taken
    over are shared, not copied: these items are only encoded, never changed."""
    new = Dataset()
    for element in (*item, *elements):
        new.add(element)
    return new


def _template_item(template: hd.seg.Segmentation) -> Dataset:
    """The stand-in's first per-frame item, checked to hold what the encoder reproduces."""
    if template.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian or template.SegmentationType != "BINARY":
        raise ValueError("the frame encoder writes BINARY segmentations in Explicit VR Little Endian only")
    item = template.PerFrameFunctionalGroupsSequence[0]
    if len(item.DerivationImageSequence) != 1 or len(item.DerivationImageSequence[0].SourceImageSequence) != 1:
        raise ValueError("the frame encoder expects one source image per frame")
    pointers = [Tag(index.DimensionIndexPointer) for index in template.DimensionIndexSequence]
    if tuple(element.keyword for element in item) != PER_FRAME_KEYWORDS or pointers != [Tag("ReferencedSegmentNumber"), Tag("ImagePositionPatient")]:
        raise ValueError(
            f"highdicom {hd.__version__} writes per-frame items this encoder does not know "
            f"({[element.keyword for element in item]}, dimension index {pointers})"
        )
    return item


class _ItemEncoder:
    """Encodes Per-Frame Functional Groups items from the pieces that repeat, each encoded once."""

    def __init__(
        self, template: hd.seg.Segmentation, source_images: Sequence[Dataset], positions: Sequence[hd.PlanePositionSequence],
        number_of_segments: int,
    ):
        item = _template_item(template)
        encodings = template.get("SpecificCharacterSet", "iso8859")
        self.derivations = [_encode(self._derivation(item, image), encodings) for image in source_images]
        self.positions = [_encode(DataElement(0x00209113, "SQ", position), encodings) for position in positions]
        numbers = range(1, number_of_segments + 1)
        self.identifications = [b"", *(_encode(self._identification(item, number), encodings) for number in numbers)]  # by number
        content = _with(item.FrameContentSequence[0], DataElement(0x00209157, "UL", list(_SENTINEL)))
        encoded = _encode(DataElement(0x00209111, "SQ", [content]), encodings)
        marker = struct.pack("<2I", *_SENTINEL)
        if encoded.count(marker) != 1:
            raise ValueError("the Frame Content template does not hold its index values exactly once")
        self.content_prefix, self.content_suffix = encoded.split(marker)

    @staticmethod
    def _derivation(item: Dataset, image: Dataset) -> DataElement:
        derivation = item.DerivationImageSequence[0]
        source = _with(
            derivation.SourceImageSequence[0],
            DataElement(0x00081150, "UI", image.SOPClassUID), DataElement(0x00081155, "UI", image.SOPInstanceUID),
        )
        return DataElement(0x00089124, "SQ", [_with(derivation, DataElement(0x00082112, "SQ", [source]))])

    @staticmethod
    def _identification(item: Dataset, number: int) -> DataElement:
        identification = _with(item.SegmentIdentificationSequence[0], DataElement(0x0062000B, "US", number))
        return DataElement(0x0062000A, "SQ", [identification])

    def sequence(self, plan: FramePlan) -> bytes:
        """The whole Per-Frame Functional Groups Sequence element (undefined length)."""
        parts = [_PFFG_HEADER]
        for plane, segment, plane_value in zip(plan.planes.tolist(), plan.segments.tolist(), plan.plane_index_values.tolist()):
            body = b"".join((
                self.derivations[plane], self.content_prefix, struct.pack("<2I", segment, plane_value), self.content_suffix,
                self.positions[plane], self.identifications[segment],
            ))
            parts += (_ITEM, struct.pack("<I", len(body)), body)
        parts.append(_SEQUENCE_DELIMITER)
        return b"".join(parts)


def default_workers() -> int:
    """CPUs this process may run on (packing threads release the GIL inside NumPy)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _write_pixel_data(fp: BinaryIO, segment_map: np.ndarray, plan: FramePlan, workers: int) -> None:
    """Pixel Data (OB): the frames' bits in one stream, first pixel in the lowest bit, no padding
    between frames (PS3.5 8.1.1). Chunks of a multiple of 8 frames start on a byte whatever the frame
    size, so they are packed independently, in threads, and written in order."""
    frame_pixels = segment_map.shape[1] * segment_map.shape[2]
    length = (len(plan) * frame_pixels + 7) // 8
    padded = length + length % 2
    if padded > MAX_LENGTH:
        raise ProcessingError(
            f"the BINARY segmentation needs {padded / 2**30:.1f} GiB of pixel data, more than a DICOM file can hold; "
            "use --seg-type LABELMAP"
        )
    fp.write(struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00" + struct.pack("<I", padded))
    chunk = 8 * max(1, CHUNK_PIXELS // (8 * frame_pixels))

    def pack(start: int) -> np.ndarray:
        frames = slice(start, start + chunk)
        bits = segment_map[plan.planes[frames]] == plan.segments[frames, None, None]
        return np.packbits(bits, bitorder="little")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[np.ndarray]] = deque()
        for start in range(0, len(plan), chunk):
            pending.append(pool.submit(pack, start))
            if len(pending) > 2 * workers:  # bounded: packed chunks do not pile up in memory
                fp.write(pending.popleft().result().data)
        while pending:
            fp.write(pending.popleft().result().data)
    if padded != length:
        fp.write(b"\x00")


def write_binary_segmentation(
    template: hd.seg.Segmentation, segment_map: np.ndarray, source_images: Sequence[Dataset], path: Path,
    workers: int | None = None,
) -> int:
    """Write ``template`` (highdicom's Segmentation of :func:`stand_in_map`) with the frames of
    ``segment_map`` to ``path``; ``template`` is consumed (its frames are removed).

    Args:
        template: Built from the stand-in map of ``segment_map`` with ``omit_empty_frames=True``.
        segment_map: Segment numbers 1..n (0 = background), (slice, row, column) in the order of
            ``source_images``; every segment must be present.
        source_images: The series' instances, as given to highdicom.
        path: File to write.
        workers: Packing threads (default: the CPUs available).

    Returns:
        The number of frames written.
    """
    number_of_segments = len(template.SegmentSequence)
    # As hd.utils.get_plane_positions_of_series builds them for single-frame images, without its
    # multi-frame check per image (the engine reads single-frame CT only), which costs 0.2 s on 400 slices.
    positions = [hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, image.ImagePositionPatient) for image in source_images]
    encoder = _ItemEncoder(template, source_images, positions, number_of_segments)
    orientation = template.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    plan = plan_frames(segment_map, number_of_segments, highdicom_plane_order(positions, orientation))
    items = encoder.sequence(plan)
    for keyword in ("PerFrameFunctionalGroupsSequence", "PixelData"):
        delattr(template, keyword)
    if max(template.keys()) >= Tag("PerFrameFunctionalGroupsSequence"):
        raise ValueError("the Segmentation holds attributes after its Per-Frame Functional Groups; they would be misplaced")
    template.NumberOfFrames = len(plan)
    with open(path, "wb") as fp:
        template.save_as(fp)  # everything before (5200,9230), as highdicom's own object is saved
        fp.write(items)
        _write_pixel_data(fp, segment_map, plan, workers or default_workers())
    return len(plan)
