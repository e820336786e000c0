"""BINARY DICOM-SEG frames encoded by ``outputs.binary_frames``: the same object highdicom writes.

Two geometries: the sample CT series (101x122: a frame is not a whole number of bytes, so frames
are packed across byte boundaries) and a synthetic axial series (96x96). The label maps hold several
segments, one present on two slices only, one single voxels at both ends, and planes where no
segment is present (in the middle and at one end).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from conftest import CT_DICOM
from mhub_cpu.auto3dseg.catalog import find_entry
from mhub_cpu.auto3dseg.labels import Label
from mhub_cpu.core.errors import ProcessingError
from mhub_cpu.dicomio.discovery import scan_directory
from mhub_cpu.dicomio.geometry import dicom_grid_affine_ras
from mhub_cpu.dicomio.headers import prepare_headers
from mhub_cpu.dicomio.series import DicomSeries
from mhub_cpu.dicomio.uids import resolve_uids
from mhub_cpu.dicomio.validation import sort_and_validate
from mhub_cpu.outputs import binary_frames
from mhub_cpu.outputs.dicom_seg import SegmentationType, highdicom_segmentation, segment_number_map, write_dicom_seg

#: Attributes that differ between two writes of the same map, by highdicom alone.
PER_WRITE_UIDS = {"SOPInstanceUID", "SeriesInstanceUID", "MediaStorageSOPInstanceUID", "TrackingUID", "DimensionOrganizationUID"}
PER_WRITE_VRS = {"DA", "TM", "DT"}


def whole_body_labels() -> list[Label]:
    entry = find_entry("whole-body-3mm-v2.0.0")
    return [entry.label_defaults(Label(value, name, {})) for value, name in enumerate(entry.segments, start=1)]


def sample_series() -> DicomSeries:
    series = scan_directory(CT_DICOM)[0][0]
    resolve_uids(series)
    sort_and_validate(series)
    prepare_headers(series)
    return series


def synthetic_series(rows: int, columns: int, slices: int, spacing: float = 2.0) -> DicomSeries:
    """Axial slices on a standard orientation, headers modelled on the sample series (no pixels needed)."""
    template = pydicom.dcmread(sorted(CT_DICOM.iterdir())[0], stop_before_pixels=True)
    study, series_uid, frame = generate_uid(), generate_uid(), generate_uid()
    instances = []
    for k in range(slices):
        dataset = copy.deepcopy(template)
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.FrameOfReferenceUID = study, series_uid, frame
        dataset.SOPInstanceUID = generate_uid()
        dataset.InstanceNumber = k + 1
        dataset.Rows, dataset.Columns = rows, columns
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        dataset.ImagePositionPatient = [-100.0, -80.0, -40.0 + k * spacing]
        dataset.PixelSpacing = [0.8, 0.8]
        dataset.SliceThickness = spacing
        instances.append(dataset)
    return DicomSeries(series_uid, study, "CT", "synthetic", instances=instances)


def synthetic_label_map(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Label values (slice, row, column) of the whole-body model: blobs, few-slice and single-voxel segments, empty planes."""
    slices, rows, columns = shape
    rng = np.random.default_rng(seed)
    label_map = np.zeros(shape, dtype=np.uint8)
    zz, yy, xx = np.meshgrid(np.arange(slices), np.arange(rows), np.arange(columns), indexing="ij")
    label_map[((zz - slices / 2) / (slices / 2.5)) ** 2 + ((yy - rows / 2) / (rows / 3)) ** 2 + ((xx - columns / 3) / (columns / 5)) ** 2 < 1] = 5
    label_map[2 : slices // 3, rows // 4 : rows // 2, columns // 2 : columns // 2 + 9] = 12
    label_map[slices // 3 : slices // 3 + 2, 3:7, 5:11] = 40  # two slices only
    speckle = rng.random(shape) < 0.002
    label_map[speckle] = 117
    label_map[slices // 2] = 0  # an empty plane in the middle
    label_map[-2:] = 0  # and at one end
    label_map[0, 0, 0] = label_map[-3, rows - 1, columns - 1] = 1  # single voxels on the first and last non-empty plane
    return label_map


def label_image(label_map: np.ndarray, series: DicomSeries) -> nib.Nifti1Image:
    return nib.Nifti1Image(label_map.transpose(2, 1, 0), dicom_grid_affine_ras(series.instances))


@dataclass
class Written:
    series: DicomSeries
    label_map: np.ndarray
    ours: Path
    highdicom: Path


@pytest.fixture(scope="module", params=["sample-101x122", "synthetic-96x96"])
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Written:
    """The same map written by ``write_dicom_seg`` and by highdicom alone."""
    series = sample_series() if request.param.startswith("sample") else synthetic_series(96, 96, 40)
    first = series.instances[0]
    label_map = synthetic_label_map((len(series.instances), int(first.Rows), int(first.Columns)), seed=len(series.instances))
    folder = tmp_path_factory.mktemp(request.param)
    labels = whole_body_labels()
    image = label_image(label_map, series)
    assert [label.value for label in write_dicom_seg(image, series, labels, folder / "ours.dcm", "whole-body", "2.0.0")] == [1, 5, 12, 40, 117]
    segment_map, present = segment_number_map(image, series, labels)
    highdicom_segmentation(segment_map, series, present, "whole-body", "2.0.0", SegmentationType.BINARY).save_as(folder / "highdicom.dcm")
    return Written(series, label_map, folder / "ours.dcm", folder / "highdicom.dcm")


def without_per_write_values(path: Path) -> Dataset:
    """The file's dataset without Pixel Data, with the UIDs, dates and times of the write blanked at every depth."""
    def blank(_: Dataset, element: pydicom.DataElement) -> None:
        if element.keyword in PER_WRITE_UIDS or element.VR in PER_WRITE_VRS:
            element.value = ""

    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    dataset.walk(blank)
    dataset.file_meta.walk(blank)
    return dataset


def read_labels(path: Path, series: DicomSeries) -> np.ndarray:
    """The label map as highdicom reads it back from a SEG: label value per voxel, slices in series order."""
    seg = hd.seg.segread(path)
    value_of = {label.name: label.value for label in whole_body_labels()}
    sop_uids = [ds.SOPInstanceUID for ds in series.instances]
    volume = np.zeros((len(sop_uids), seg.Rows, seg.Columns), dtype=np.uint8)
    for description in seg.SegmentSequence:
        mask = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=sop_uids, segment_numbers=[int(description.SegmentNumber)],
            assert_missing_frames_are_empty=True,
        )[..., 0]
        assert not volume[mask > 0].any(), "segments overlap"
        volume[mask > 0] = value_of[description.SegmentLabel]
    return volume


def dciodvfy_errors(path: Path) -> list[str]:
    tool = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")
    assert Path(tool).exists(), "dciodvfy (dicom3tools, a test dependency) is not installed"
    result = subprocess.run([tool, "-allpffgitems", str(path)], capture_output=True, text=True, errors="replace")
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_same_object_as_highdicom_writes(written: Written) -> None:
    ours, theirs = pydicom.dcmread(written.ours), pydicom.dcmread(written.highdicom)
    assert ours.NumberOfFrames == theirs.NumberOfFrames > len(written.series.instances)
    assert ours.PerFrameFunctionalGroupsSequence == theirs.PerFrameFunctionalGroupsSequence
    assert np.array_equal(ours.pixel_array, theirs.pixel_array)
    frame_bytes = (int(ours.NumberOfFrames) * ours.Rows * ours.Columns + 7) // 8
    assert ours.PixelData[:frame_bytes] == theirs.PixelData[:frame_bytes]
    assert len(ours.PixelData) == len(theirs.PixelData) == frame_bytes + frame_bytes % 2
    ours_rest, theirs_rest = without_per_write_values(written.ours), without_per_write_values(written.highdicom)
    assert ours_rest == theirs_rest
    assert ours_rest.file_meta == theirs_rest.file_meta


def test_read_back_equals_the_label_map(written: Written) -> None:
    assert np.array_equal(read_labels(written.ours, written.series), written.label_map)


def test_empty_planes_have_no_frames_and_no_index(written: Written) -> None:
    seg = pydicom.dcmread(written.ours)
    non_empty = int(written.label_map.any(axis=(1, 2)).sum())
    assert non_empty < len(written.series.instances)
    plane_values = {int(item.FrameContentSequence[0].DimensionIndexValues[1]) for item in seg.PerFrameFunctionalGroupsSequence}
    assert plane_values == set(range(1, non_empty + 1))
    frames_of_40 = [item for item in seg.PerFrameFunctionalGroupsSequence if item.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 4]
    assert len(frames_of_40) == 2, "a segment on two slices has two frames"


def test_dciodvfy_reports_no_errors(written: Written) -> None:
    assert dciodvfy_errors(written.ours) == []


def test_chunks_and_threads_do_not_change_the_pixel_data(written: Written, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight frames per chunk (the smallest), three threads: the same bytes as highdicom's."""
    monkeypatch.setattr(binary_frames, "CHUNK_PIXELS", 1)
    image, labels = label_image(written.label_map, written.series), whole_body_labels()
    segment_map, present = segment_number_map(image, written.series, labels)
    template = highdicom_segmentation(
        binary_frames.stand_in_map(segment_map, len(present)), written.series, present, "whole-body", "2.0.0", SegmentationType.BINARY,
    )
    frames = binary_frames.write_binary_segmentation(template, segment_map, written.series.instances, tmp_path / "seg.dcm", workers=3)
    theirs = pydicom.dcmread(written.highdicom)
    assert frames == theirs.NumberOfFrames > 8
    frame_bytes = (frames * theirs.Rows * theirs.Columns + 7) // 8
    assert pydicom.dcmread(tmp_path / "seg.dcm").PixelData[:frame_bytes] == theirs.PixelData[:frame_bytes]


def test_one_segment_round_trips(tmp_path: Path) -> None:
    series = synthetic_series(96, 96, 12)
    label_map = np.zeros((12, 96, 96), dtype=np.uint8)
    label_map[3:6, 10:30, 40:50] = 12
    write_dicom_seg(label_image(label_map, series), series, whole_body_labels(), tmp_path / "seg.dcm", "whole-body", "2.0.0")
    assert np.array_equal(read_labels(tmp_path / "seg.dcm", series), label_map)
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []


def test_pixel_data_too_large_for_a_file_is_refused_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binary_frames, "MAX_LENGTH", 1000)
    series = synthetic_series(96, 96, 12)
    label_map = synthetic_label_map((12, 96, 96), seed=1)
    with pytest.raises(ProcessingError, match="more than a DICOM file can hold; use --seg-type LABELMAP"):
        write_dicom_seg(label_image(label_map, series), series, whole_body_labels(), tmp_path / "seg.dcm", "whole-body", "2.0.0")
    assert list(tmp_path.iterdir()) == []
