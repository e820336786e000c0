"""Systematic mutations of a valid CT series, as found in real files (for the input fuzz test).

Every attribute of the Patient, General Study, General Series, Frame of Reference, General
Equipment, General Image, Image Plane, Image Pixel, CT Image and SOP Common modules (PS3.3
C.7.1.1, C.7.2.1, C.7.3.1, C.7.4.1, C.7.5.1, C.7.6.1, C.7.6.2, C.7.6.3, C.8.2.1, C.12.1) is
deleted and emptied one at a time; then character sets and person-name forms, file order and
names, missing, duplicated and truncated slices, mixed series, clutter, tilt, localizers and
transfer syntaxes. A mutation says whether the input must be accepted (``ok``: Type 2/3 data a
scanner may leave out) or may be refused (``either``).
"""

from __future__ import annotations

import copy
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

#: (module, keyword, type) per PS3.3; the type decides whether a blank or absent value must be accepted.
MODULE_ATTRIBUTES: list[tuple[str, str, str]] = [
    ("Patient", "PatientName", "2"), ("Patient", "PatientID", "2"), ("Patient", "PatientBirthDate", "2"),
    ("Patient", "PatientSex", "2"), ("Patient", "OtherPatientIDsSequence", "3"), ("Patient", "PatientComments", "3"),
    ("General Study", "StudyInstanceUID", "1"), ("General Study", "StudyDate", "2"), ("General Study", "StudyTime", "2"),
    ("General Study", "ReferringPhysicianName", "2"), ("General Study", "StudyID", "2"),
    ("General Study", "AccessionNumber", "2"), ("General Study", "StudyDescription", "3"),
    ("Patient Study", "PatientAge", "3"), ("Patient Study", "PatientWeight", "3"),
    ("General Series", "Modality", "1"), ("General Series", "SeriesInstanceUID", "1"),
    ("General Series", "SeriesNumber", "2"), ("General Series", "Laterality", "2C"),
    ("General Series", "SeriesDate", "3"), ("General Series", "SeriesTime", "3"),
    ("General Series", "SeriesDescription", "3"), ("General Series", "PatientPosition", "2C"),
    ("General Series", "BodyPartExamined", "3"), ("General Series", "ProtocolName", "3"),
    ("Frame of Reference", "FrameOfReferenceUID", "1"), ("Frame of Reference", "PositionReferenceIndicator", "2"),
    ("General Equipment", "Manufacturer", "2"), ("General Equipment", "InstitutionName", "3"),
    ("General Equipment", "StationName", "3"), ("General Equipment", "ManufacturerModelName", "3"),
    ("General Equipment", "DeviceSerialNumber", "3"), ("General Equipment", "SoftwareVersions", "3"),
    ("General Image", "InstanceNumber", "2"), ("General Image", "ContentDate", "2C"),
    ("General Image", "ContentTime", "2C"), ("General Image", "AcquisitionNumber", "3"),
    ("Image Plane", "PixelSpacing", "1"), ("Image Plane", "ImageOrientationPatient", "1"),
    ("Image Plane", "ImagePositionPatient", "1"), ("Image Plane", "SliceThickness", "2"),
    ("Image Plane", "SliceLocation", "3"), ("Image Plane", "SpacingBetweenSlices", "3"),
    ("Image Pixel", "SamplesPerPixel", "1"), ("Image Pixel", "PhotometricInterpretation", "1"),
    ("Image Pixel", "Rows", "1"), ("Image Pixel", "Columns", "1"), ("Image Pixel", "BitsAllocated", "1"),
    ("Image Pixel", "BitsStored", "1"), ("Image Pixel", "HighBit", "1"), ("Image Pixel", "PixelRepresentation", "1"),
    ("Image Pixel", "PixelData", "1C"),
    ("CT Image", "ImageType", "1"), ("CT Image", "RescaleIntercept", "1"), ("CT Image", "RescaleSlope", "1"),
    ("CT Image", "KVP", "2"), ("CT Image", "RescaleType", "1C"),
    ("VOI LUT", "WindowCenter", "1C"), ("VOI LUT", "WindowWidth", "1C"),
    ("SOP Common", "SOPClassUID", "1"), ("SOP Common", "SOPInstanceUID", "1"),
    ("SOP Common", "SpecificCharacterSet", "1C"),
]
#: Type 1 attributes we repair when blank (UIDs from file meta or generated): they must be accepted too.
REPAIRED_WHEN_BLANK = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}
#: Type 1 attributes without which the series is still a usable CT volume.
NOT_NEEDED = {"ImageType", "RescaleType", "WindowCenter", "WindowWidth", "SpecificCharacterSet"}


@dataclass(frozen=True)
class Mutation:
    """A named change to a copy of the series folder; ``expect`` is ``ok`` or ``either``."""

    name: str
    apply: Callable[[list[Dataset], Path], None]  # writes the mutated series into the folder
    expect: str = "either"


def write_all(datasets: list[Dataset], folder: Path, names: list[str] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, dataset in enumerate(datasets):
        path = folder / (names[index] if names else f"CT_{index + 1:04d}.dcm")
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(path, enforce_file_format=False)
        paths.append(path)
    return paths


def _per_dataset(change: Callable[[Dataset], None]) -> Callable[[list[Dataset], Path], None]:
    def apply(datasets: list[Dataset], folder: Path) -> None:
        for dataset in datasets:
            change(dataset)
        write_all(datasets, folder)

    return apply


def _delete(keyword: str) -> Callable[[Dataset], None]:
    def change(dataset: Dataset) -> None:
        if keyword in dataset:
            delattr(dataset, keyword)

    return change


def _empty(keyword: str) -> Callable[[Dataset], None]:
    def change(dataset: Dataset) -> None:
        vr = pydicom.datadict.dictionary_VR(keyword).split(" or ")[-1]  # "OB or OW" -> OW, "US or SS" -> SS
        dataset.add_new(keyword, vr, None)

    return change


def _charset(charset: str | list[str] | None, name: str) -> Callable[[Dataset], None]:
    def change(dataset: Dataset) -> None:
        if charset is None:
            if "SpecificCharacterSet" in dataset:
                del dataset.SpecificCharacterSet
        else:
            dataset.SpecificCharacterSet = charset
        dataset.PatientName = name
        dataset.InstitutionName = name.split("^")[0][:64]
        dataset.StudyDescription = name.replace("^", " ").replace("=", " ")[:64]

    return change


def _raw_charset(value: bytes, name: bytes) -> Callable[[Dataset], None]:
    """A character set value or name bytes pydicom would not write itself (e.g. unknown terms)."""

    def change(dataset: Dataset) -> None:
        dataset.add(pydicom.DataElement(0x00080005, "CS", value))
        dataset.add(pydicom.DataElement(0x00100010, "PN", name))

    return change


def _tilt(degrees: float) -> Callable[[list[Dataset], Path], None]:
    def apply(datasets: list[Dataset], folder: Path) -> None:
        shift = np.tan(np.radians(degrees))
        z0 = float(datasets[0].ImagePositionPatient[2])
        for dataset in datasets:
            x, y, z = (float(v) for v in dataset.ImagePositionPatient)
            dataset.ImagePositionPatient = [x, round(y + (z - z0) * shift, 4), z]
            dataset.GantryDetectorTilt = degrees
        write_all(datasets, folder)

    return apply


def _file_level() -> list[Mutation]:
    def reversed_names(datasets: list[Dataset], folder: Path) -> None:
        write_all(datasets, folder, [f"IMG{i:04d}" for i in range(len(datasets), 0, -1)])

    def shuffled_names(datasets: list[Dataset], folder: Path) -> None:
        names = [f"{generate_uid()}.dcm" for _ in datasets]
        random.Random(7).shuffle(datasets)
        write_all(datasets, folder, names)

    def nested_with_clutter(datasets: list[Dataset], folder: Path) -> None:
        write_all(datasets, folder, [f"study/series/{i:03d}" for i in range(len(datasets))])
        (folder / "README.txt").write_text("exported by a PACS\n")
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
        (folder / "study" / "thumbs.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
        (folder / "empty.dcm").write_bytes(b"")
        (folder / "DICOMDIR.bak").write_bytes(bytes(128) + b"DICM")  # marker, then nothing

    def drop(index: int) -> Callable[[list[Dataset], Path], None]:
        def apply(datasets: list[Dataset], folder: Path) -> None:
            write_all(datasets[:index] + datasets[index + 1 :], folder)

        return apply

    def duplicate_file(datasets: list[Dataset], folder: Path) -> None:
        paths = write_all(datasets, folder)
        shutil.copy(paths[5], folder / "copy_of_slice_6.dcm")

    def duplicate_position(datasets: list[Dataset], folder: Path) -> None:
        extra = copy.deepcopy(datasets[5])
        extra.SOPInstanceUID = generate_uid()
        extra.file_meta.MediaStorageSOPInstanceUID = extra.SOPInstanceUID
        write_all(datasets + [extra], folder)

    def truncated(datasets: list[Dataset], folder: Path) -> None:
        paths = write_all(datasets, folder)
        data = paths[7].read_bytes()
        paths[7].write_bytes(data[: len(data) - 3000])

    def header_only(datasets: list[Dataset], folder: Path) -> None:
        paths = write_all(datasets, folder)
        data = paths[3].read_bytes()
        paths[3].write_bytes(data[:200])

    def mixed_series(datasets: list[Dataset], folder: Path) -> None:
        write_all(datasets, folder / "a")
        other = copy.deepcopy(datasets)
        series_uid = generate_uid()
        for dataset in other:
            dataset.SeriesInstanceUID = series_uid
            dataset.SOPInstanceUID = generate_uid()
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        write_all(other, folder / "b")

    def with_mr_series(datasets: list[Dataset], folder: Path) -> None:
        write_all(datasets, folder / "ct")
        mr = copy.deepcopy(datasets[:4])
        series_uid = generate_uid()
        for dataset in mr:
            dataset.Modality = "MR"
            dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
            dataset.SeriesInstanceUID = series_uid
            dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        write_all(mr, folder / "mr")

    def only_localizers(datasets: list[Dataset], folder: Path) -> None:
        for dataset in datasets:
            dataset.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        write_all(datasets, folder)

    def localizer_in_series(datasets: list[Dataset], folder: Path) -> None:
        scout = copy.deepcopy(datasets[0])
        scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal scout
        scout.SOPInstanceUID = scout.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        write_all([scout] + datasets, folder)

    def rle(datasets: list[Dataset], folder: Path) -> None:
        for dataset in datasets:
            dataset.compress(pydicom.uid.RLELossless)
        write_all(datasets, folder)

    def implicit_vr(datasets: list[Dataset], folder: Path) -> None:
        for dataset in datasets:
            dataset.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        write_all(datasets, folder)

    def unsupported_syntax(datasets: list[Dataset], folder: Path) -> None:
        for dataset in datasets:  # MPEG-2 video: no pixel data decoder exists
            dataset.PixelData = encapsulate([dataset.PixelData])
            dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        write_all(datasets, folder)

    return [
        Mutation("files: names in reverse order", reversed_names, "ok"),
        Mutation("files: random names, shuffled", shuffled_names, "ok"),
        Mutation("files: nested folders and non-DICOM clutter", nested_with_clutter, "either"),
        Mutation("slices: first removed", drop(0), "ok"),
        Mutation("slices: last removed", lambda d, f: write_all(d[:-1], f), "ok"),
        Mutation("slices: one in the middle removed", drop(10)),
        Mutation("slices: one file copied twice", duplicate_file, "ok"),
        Mutation("slices: two images at one position", duplicate_position),
        Mutation("slices: one file truncated", truncated),
        Mutation("slices: one file cut after its header", header_only),
        Mutation("series: two CT series in the folder", mixed_series),
        Mutation("series: an MR series beside the CT", with_mr_series, "ok"),
        Mutation("series: localizers only", only_localizers),
        Mutation("series: a coronal localizer inside the CT series", localizer_in_series, "ok"),
        Mutation("geometry: gantry tilt 15 degrees", _tilt(15.0)),
        Mutation("transfer syntax: RLE Lossless", rle, "ok"),
        Mutation("transfer syntax: Implicit VR Little Endian", implicit_vr, "ok"),
        Mutation("transfer syntax: MPEG2 (no decoder)", unsupported_syntax),
    ]


def mutations() -> list[Mutation]:
    """All mutations, in a fixed order."""
    found: list[Mutation] = [Mutation("unchanged", _per_dataset(lambda ds: None), "ok")]
    for module, keyword, kind in MODULE_ATTRIBUTES:
        tolerated = kind.startswith(("2", "3")) or keyword in NOT_NEEDED
        found.append(Mutation(f"{module}: {keyword} deleted", _per_dataset(_delete(keyword)),
                              "ok" if tolerated or keyword in {"SOPInstanceUID", "SOPClassUID"} else "either"))
        found.append(Mutation(f"{module}: {keyword} empty", _per_dataset(_empty(keyword)),
                              "ok" if tolerated or keyword in REPAIRED_WHEN_BLANK else "either"))
    charsets: list[tuple[str, str | list[str] | None, str]] = [
        ("absent, ASCII name", None, "Doe^John"),
        ("ISO_IR 100 (Latin-1)", "ISO_IR 100", "Søren^Ærø"),
        ("ISO_IR 192 (UTF-8)", "ISO_IR 192", "Müller^Jürgen=ミュラー^ユルゲン"),
        ("ISO 2022 IR 87 (Japanese)", ["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎"),
        ("GB18030 (Chinese)", "GB18030", "Wang^XiaoDong=王^小东"),
        ("ISO_IR 144 (Cyrillic)", "ISO_IR 144", "Иванов^Иван"),
    ]
    for label, charset, name in charsets:
        found.append(Mutation(f"character set: {label}", _per_dataset(_charset(charset, name)), "ok"))
    found.append(Mutation("character set: present but empty", _per_dataset(_raw_charset(b"", b"Doe^John")), "ok"))
    found.append(Mutation("character set: unknown term", _per_dataset(_raw_charset(b"ISO_IR 999", b"Doe^John")), "ok"))
    found.append(Mutation("character set: Latin-1 bytes, none declared", _per_dataset(_raw_charset(b"", "Müller^Jörg".encode("latin-1"))), "ok"))
    for label, name in (
        ("retired form without carets", "DOE JOHN"), ("trailing empty components", "Doe^John^^^"),
        ("three component groups", "Doe^John=Doe^John=Doe^John"), ("padded with spaces", " Doe ^ John "),
        ("65 characters", "D" * 65),
    ):
        found.append(Mutation(f"person name: {label}", _per_dataset(_charset("ISO_IR 192", name)), "ok"))
    return found + _file_level()
