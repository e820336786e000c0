"""DICOM series discovery, grouping and selection of the CT series to process."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid

from ..errors import InputError
from ..progress import log

#: Image Storage SOP classes accepted as CT input (PS3.4 B.5): CT Image Storage, Enhanced CT.
CT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"}
#: SOP class of CT Image Storage, used where a file declares none.
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Tolerance (mm) for positions and spacings compared across slices.
POSITION_TOLERANCE_MM = 0.05


def _is_dicom_file(path: Path) -> bool:
    """True if the file carries the Part 10 'DICM' preamble marker (PS3.10 7.1)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _uid(value: object) -> str:
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


def scan_directory(root: Path) -> tuple[list[DicomSeries], int]:
    """Read the headers of every DICOM file below ``root`` and group them into series.

    Files without the Part 10 marker are skipped (counted). A file that has the marker but cannot
    be parsed is an error: a broken file silently left out would make a gap in the volume.

    Returns:
        The series found (unsorted) and the number of non-DICOM files skipped.
    """
    groups: dict[tuple, DicomSeries] = {}
    skipped = 0
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    for path in paths:
        if not _is_dicom_file(path):
            skipped += 1
            continue
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
            raise InputError(f"broken DICOM file {path}: {exc}") from exc
        key = _series_key(dataset, path)
        if key not in groups:
            modality = str(dataset.get("Modality", "") or "").strip().upper()
            groups[key] = DicomSeries(
                series_instance_uid=_uid(dataset.get("SeriesInstanceUID")),
                study_instance_uid=_uid(dataset.get("StudyInstanceUID")),
                modality=modality or _modality_of_sop_class(dataset),
                description=str(dataset.get("SeriesDescription", "") or ""),
                localizer=_is_localizer(dataset),
            )
        groups[key].instances.append(dataset)
        groups[key].files.append(path)
    found = list(groups.values())
    for series in found:
        if series.modality and not str(series.instances[0].get("Modality", "") or "").strip():
            series.repairs.append(f"Modality (0008,0060) blank in the source: {series.modality}, from the SOP Class UID")
            for dataset in series.instances:
                dataset.Modality = series.modality
        if not series.series_instance_uid:  # selectable (--series) by the UID every output will carry
            series.series_instance_uid = derived_uid(instance_entropy(series), "series")
            series.generated_uids.append("SeriesInstanceUID")
    return found, skipped


def _modality_of_sop_class(dataset: Dataset) -> str:
    """``CT`` for a blank Modality whose SOP class (dataset or file meta) is CT image storage."""
    meta = getattr(dataset, "file_meta", None)
    classes = {_uid(dataset.get("SOPClassUID")), _uid(meta.get("MediaStorageSOPClassUID")) if meta is not None else ""}
    return "CT" if classes & CT_SOP_CLASSES else ""


def _series_key(dataset: Dataset, path: Path) -> tuple:
    """Grouping key: the Series Instance UID, or for blank UIDs the folder and series attributes.

    Localizer (scout) images form a group of their own even when a scanner stores them in the
    series of the volume, so that they never become a slice of it.
    """
    uid = _uid(dataset.get("SeriesInstanceUID"))
    localizer = _is_localizer(dataset)
    if uid:
        return ("uid", uid, localizer)
    try:
        orientation = tuple(round(float(v), 3) for v in dataset.get("ImageOrientationPatient", []) or [])
    except (TypeError, ValueError):
        orientation = ()
    return (
        "no-uid",
        localizer,
        str(path.parent),
        str(dataset.get("SeriesNumber", "")),
        str(dataset.get("Modality", "")),
        str(dataset.get("FrameOfReferenceUID", "")),
        orientation,
        str(dataset.get("Rows", "")),
        str(dataset.get("Columns", "")),
    )


def select_series(series: list[DicomSeries], series_uid: str | None, root: Path) -> DicomSeries:
    """Pick the CT series to process: the one named by ``series_uid``, else the only CT series.

    Localizer (scout) images, whose Image Type (0008,0008) contains LOCALIZER, are never a volume.
    A series whose Series Instance UID is blank in the source is named by the UID generated for it
    (:meth:`DicomSeries.summary` lists it), the one its outputs carry.

    Raises:
        InputError: no DICOM, the named series is absent, not CT or a localizer, no CT series, only
            localizers, or several CT series and no ``series_uid`` to choose.
    """
    if not series:
        raise InputError(f"no DICOM image files found in {root}")
    listing = "; ".join(s.summary() for s in series)
    if series_uid is not None:
        matches = [s for s in series if s.series_instance_uid == series_uid.strip()]
        volumes = [s for s in matches if not s.localizer]
        if not matches:
            raise InputError(f"series {series_uid} not found in {root}; series present: {listing}")
        if not volumes:
            raise InputError(
                f"series {series_uid} holds only localizer (scout) images (Image Type LOCALIZER), not a CT volume"
            )
        chosen = volumes[0]
        if not chosen.is_ct:
            raise InputError(
                f"series {series_uid} has modality {chosen.modality or 'unknown'}, not CT; "
                "these models are trained on CT only"
            )
        return chosen
    candidates = [s for s in series if s.is_ct and not s.localizer]
    if not candidates:
        if any(s.is_ct for s in series):
            raise InputError(
                f"the CT images in {root} are all localizers (scouts: Image Type LOCALIZER), "
                "not a CT volume; export the axial series too"
            )
        found = ", ".join(sorted({s.modality or "none" for s in series}))
        raise InputError(
            f"no CT series in {root} (Modality of the series found: {found}); these models are trained on CT only"
        )
    if len(candidates) > 1:
        names = "; ".join(s.summary() for s in candidates)
        raise InputError(f"{len(candidates)} CT series in {root}; choose one with --series UID: {names}")
    return candidates[0]


def _is_localizer(dataset: Dataset) -> bool:
    image_type = dataset.get("ImageType", []) or []
    if isinstance(image_type, str):
        image_type = image_type.split("\\")
    return "LOCALIZER" in [str(v).strip().upper() for v in image_type]


def slice_normal(dataset: Dataset, path: Path | None = None) -> np.ndarray:
    """Unit normal of the image plane: row direction × column direction (PS3.3 C.7.6.2.1.1)."""
    orientation = _numbers(dataset, "ImageOrientationPatient", 6, path or Path("the image"))
    normal = np.cross(orientation[:3], orientation[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-3:
        raise InputError("Image Orientation (Patient) row and column directions are parallel")
    return normal / norm


#: Slice positions may drift sideways by at most this fraction of a pixel over the whole series
#: before the series counts as gantry-tilted (sheared) rather than stacked along its normal.
TILT_TOLERANCE_PIXELS = 0.5
def _numbers(
    dataset: Dataset, keyword: str, count: int, path: Path, consequence: str = "the slice cannot be placed in space",
) -> np.ndarray:
    """A multi-valued numeric attribute, or a refusal naming the attribute and the file."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    name = pydicom.datadict.dictionary_description(tag) if tag is not None else keyword
    where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})" if tag is not None else ""
    try:
        value = dataset.get(keyword)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} {where} of {path.name} cannot be read: {exc}") from exc
    if value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0):
        raise InputError(f"{name} {where} is missing or empty in {path.name}; {consequence}")
    try:
        numbers = np.asarray([float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value])])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} {where} of {path.name} is not numeric: {value!r}") from exc
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise InputError(f"{name} {where} of {path.name} has {numbers.size} values, expected {count}")
    return numbers


def drop_duplicate_files(series: DicomSeries) -> None:
    """Keep one file per SOP Instance UID (a copied file is the same image) and record the rest.

    Raises:
        InputError: two files share a SOP Instance UID but lie at different positions.
    """
    seen: dict[str, int] = {}
    keep = []
    for index, (path, dataset) in enumerate(zip(series.files, series.instances)):
        uid = str(dataset.SOPInstanceUID)
        if uid not in seen:
            seen[uid] = index
            keep.append(index)
            continue
        other = series.instances[seen[uid]]
        if dataset.get("ImagePositionPatient") != other.get("ImagePositionPatient"):
            raise InputError(
                f"{path.name} and {series.files[seen[uid]].name} share SOP Instance UID {uid} "
                "but lie at different positions"
            )
        series.ignored.append(f"{path}: a second copy of SOP instance {uid}")
    if len(keep) < len(series.files):
        log(f"warning: ignored {len(series.files) - len(keep)} duplicate file(s) of the same SOP instance")
        series.instances = [series.instances[i] for i in keep]
        series.files = [series.files[i] for i in keep]


def sort_and_validate(series: DicomSeries) -> None:
    """Sort instances by position along the slice normal and check the series forms one volume.

    Checks: a single image orientation, one size and pixel spacing, one image per position,
    slices stacked along their normal (not gantry-tilted), uniform slice spacing (a missing slice
    is a gap and is refused), and at least two slices.

    Raises:
        InputError: with the first inconsistency found.
    """
    instances = series.instances
    if len(instances) < 2:
        raise InputError(f"series {series.series_instance_uid} has {len(instances)} image; a volume needs at least 2")
    for keyword in ("Rows", "Columns"):
        missing = [f for f, ds in zip(series.files, instances) if not isinstance(ds.get(keyword), int) or ds.get(keyword) < 1]
        if missing:
            raise InputError(f"{keyword} is missing or empty in {missing[0].name}")
    first = instances[0]
    normal = slice_normal(first, series.files[0])
    first_spacing = _numbers(first, "PixelSpacing", 2, series.files[0])
    for path, dataset in zip(series.files, instances):
        if np.abs(slice_normal(dataset, path) - normal).max() > 1e-3:
            raise InputError(f"{path} has a different image orientation than the rest of the series")
        if (dataset.Rows, dataset.Columns) != (first.Rows, first.Columns):
            raise InputError(f"{path} is {dataset.Rows}x{dataset.Columns}, the series is {first.Rows}x{first.Columns}")
        if np.abs(_numbers(dataset, "PixelSpacing", 2, path) - first_spacing).max() > 1e-4:
            raise InputError(f"{path} has a different pixel spacing than the rest of the series")

    for path, dataset in zip(series.files, instances):
        for keyword in ("RescaleIntercept", "RescaleSlope"):
            if keyword in dataset:
                _numbers(dataset, keyword, 1, path, "its pixel values cannot be converted to Hounsfield units")
    points = np.array([_numbers(ds, "ImagePositionPatient", 3, p) for p, ds in zip(series.files, instances)])
    positions = points @ normal
    order = np.argsort(positions, kind="stable")
    series.instances = [instances[i] for i in order]
    series.files = [series.files[i] for i in order]
    positions, points = positions[order], points[order]
    steps = np.diff(positions)
    if np.any(steps < POSITION_TOLERANCE_MM):
        index = int(np.argmin(steps))
        raise InputError(
            f"two images at the same position ({positions[index]:.2f} mm along the normal): "
            f"{series.files[index].name} and {series.files[index + 1].name}; the series holds more than one volume"
        )
    _check_tilt(series, points, normal, float(first_spacing.min()))
    spacing = float(np.median(steps))
    if np.abs(steps - spacing).max() > max(POSITION_TOLERANCE_MM, 0.01 * spacing):
        index = int(np.argmax(np.abs(steps - spacing)))
        raise InputError(
            f"non-uniform slice spacing: {steps[index]:.3f} mm between {series.files[index].name} and "
            f"{series.files[index + 1].name}, {spacing:.3f} mm elsewhere (missing slice?)"
        )


def _check_tilt(series: DicomSeries, points: np.ndarray, normal: np.ndarray, pixel_mm: float) -> None:
    """Refuse a gantry-tilted series: slice origins drift sideways instead of along the normal."""
    travel = points[-1] - points[0]
    along = float(travel @ normal)
    sideways = float(np.linalg.norm(travel - along * normal))
    if sideways <= TILT_TOLERANCE_PIXELS * pixel_mm:
        return
    angle = float(np.degrees(np.arctan2(sideways, abs(along))))
    header = series.instances[0].get("GantryDetectorTilt")
    stated = f"; Gantry/Detector Tilt (0018,1120) says {float(header):g} degrees" if header not in (None, "") else ""
    raise InputError(
        f"series {series.series_instance_uid} is gantry-tilted by {angle:.1f} degrees{stated}: its slices are "
        "sheared, not stacked along their normal, and a segmentation on them would be misplaced; "
        "resample it to an untilted grid first (dcm2niix writes a tilt-corrected NIfTI, which --input accepts)"
    )


def resolve_uids(series: DicomSeries) -> None:
    """Fill blank UIDs so that the series can be referenced, and record every replacement.

    SOP Class and SOP Instance UIDs blank in a dataset are taken from its file meta information
    (which Part 10 requires to be present). Blank Study and Series Instance UIDs are generated
    deterministically from the instance UIDs (so repeated runs agree) and listed in
    :attr:`DicomSeries.generated_uids`.
    """
    for path, dataset in zip(series.files, series.instances):
        meta = getattr(dataset, "file_meta", None)
        if not _uid(dataset.get("SOPInstanceUID")):
            meta_uid = _uid(meta.get("MediaStorageSOPInstanceUID")) if meta is not None else ""
            if not meta_uid:
                raise InputError(f"{path.name} has neither SOP Instance UID nor Media Storage SOP Instance UID")
            dataset.SOPInstanceUID = meta_uid
            series.sop_uids_from_file_meta = True
        if not _uid(dataset.get("SOPClassUID")):
            meta_class = _uid(meta.get("MediaStorageSOPClassUID")) if meta is not None else ""
            dataset.SOPClassUID = meta_class or CT_IMAGE_STORAGE
            series.sop_uids_from_file_meta = True
    if not series.study_instance_uid:
        series.study_instance_uid = derived_uid(instance_entropy(series), "study")
        series.generated_uids.append("StudyInstanceUID")
    for dataset in series.instances:
        dataset.StudyInstanceUID = series.study_instance_uid
        dataset.SeriesInstanceUID = series.series_instance_uid
    if series.generated_uids:
        log(
            "warning: blank " + " and ".join(series.generated_uids)
            + " in the source; generated replacements (outputs reference UIDs that exist nowhere else)"
        )


def instance_entropy(series: DicomSeries) -> str:
    """Order-independent identity of a series' instances: their SOP Instance UIDs (or file names)."""
    uids = []
    for path, dataset in zip(series.files, series.instances):
        meta = getattr(dataset, "file_meta", None)
        uid = _uid(dataset.get("SOPInstanceUID")) or (_uid(meta.get("MediaStorageSOPInstanceUID")) if meta is not None else "")
        uids.append(uid or path.name)
    return "\n".join(sorted(uids))


def derived_uid(entropy: str, purpose: str) -> str:
    """A UID derived from the instance UIDs, so that repeated runs generate the same one."""
    return generate_uid(entropy_srcs=[hashlib.sha256(f"{purpose}\n{entropy}".encode()).hexdigest()])


def check_sop_classes(series: DicomSeries) -> None:
    """Refuse a series whose SOP class is not CT image storage (e.g. an MR or secondary capture)."""
    classes = {str(ds.SOPClassUID) for ds in series.instances}
    unknown = classes - CT_SOP_CLASSES
    if unknown:
        names = ", ".join(sorted(pydicom.uid.UID(c).name for c in unknown))
        raise InputError(f"series {series.series_instance_uid} holds {names} objects, not CT images")


def ensure_readable(paths: list[Path]) -> None:
    """Fail early on unreadable files in the chosen series (e.g. permission denied)."""
    for path in paths:
        if not os.access(path, os.R_OK):
            raise InputError(f"cannot read {path}")
