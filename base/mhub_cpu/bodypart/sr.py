"""DICOM Structured Reports of the results, encoded as Imaging Data Commons encodes BPR results.

Two Comprehensive 3D SR documents with the TID 1500 Measurement Report template (PS3.16 TID 1500,
one TID 1501 measurement group per finding), as in IDC's NLST / NSCLC-Radiomics BPR annotations:

* ``bpr_landmarks_sr.dcm`` ("BPR landmark annotations"): one group per landmark found in the
  volume, tracking identifier "Annotations group landmarks", the landmark as Finding Site
  (SCT 363698007) with its Topographical Modifier (Center / Top / Bottom) from IDC's
  ``bpr_landmarks_code_mapping.csv``, and the CT slice whose score is nearest to the landmark's
  expected score as source image;
* ``bpr_regions_sr.dcm`` ("BPR region annotations"): one group per scored slice, tracking
  identifier "Annotations group regions", each body-part region the slice lies in as Finding
  Site (IDC's ``bpr_regions_code_mapping.csv``), the slice as source image.

Slices are matched to SOP instances by position: the stored NIfTI slice of each score (after
bpreg's flip, if any) is placed in patient space with the NIfTI affine and compared with the
instances' Image Position (Patient) along the slice normal, so that a series stored, sorted or
numbered in reverse order is referenced correctly.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from mhub_cpu import __name__ as package_name
from mhub_cpu.bodypart.modelfiles import BpregSettings
from mhub_cpu.bodypart.postprocess import ScoreCurve, landmark_present, landmark_score
from mhub_cpu.bodypart.preprocess import Orientation
from mhub_cpu.bodypart.tables import idc_codes
from mhub_cpu.core.errors import InputError, ProcessingError
from mhub_cpu.core.files import write_atomic
from mhub_cpu.dicomio.geometry import nearest_instances
from mhub_cpu.dicomio.series import DicomSeries

ALGORITHM = hd.sr.AlgorithmIdentification(name="BodyPartRegression", version="1.1.0 (bpreg public model, mhub-cpu OpenVINO)")
DEVICE_NAME = "BodyPartRegression"
SERIES_NUMBER = {"landmarks": 101, "regions": 102}
DESCRIPTION = {"landmarks": "BPR landmark annotations", "regions": "BPR region annotations"}


def _code(value: str, scheme: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _concept(code: dict[str, str]) -> hd.sr.CodedConcept:
    return _code(code["value"], code["scheme"], code["meaning"])


def landmark_sites() -> dict[str, hd.sr.FindingSite]:
    """IDC's landmark codes as Finding Site with Topographical Modifier."""
    return {
        name: hd.sr.FindingSite(
            _concept(entry["site"]), topographical_modifier=_concept(entry["modifier"]) if entry["modifier"] else None
        )
        for name, entry in idc_codes()["landmarks"].items()
    }


def region_sites() -> dict[str, hd.sr.FindingSite]:
    """IDC's region codes (legs, pelvis, abdomen, chest, shoulder-neck, head) as Finding Site."""
    return {name: hd.sr.FindingSite(_concept(code)) for name, code in idc_codes()["regions"].items()}


def source_summary(series: DicomSeries) -> dict:
    """What qa.json says about the DICOM source, including UIDs we had to generate."""
    return {
        "series_instance_uid": series.series_instance_uid,
        "study_instance_uid": series.study_instance_uid,
        "instances": len(series.instances),
        "generated_uids": list(series.generated_uids),
        "sop_uids_from_file_meta": bool(series.sop_uids_from_file_meta),
    }


def header_body_part(series: DicomSeries) -> str | None:
    """Body Part Examined (0018,0015) as found in the source header, if any."""
    value = str(series.instances[0].get("BodyPartExamined", "") or "").strip()
    return value or None


def slice_instances(series: DicomSeries, image: nib.Nifti1Image, orient: Orientation) -> list[Dataset]:
    """The source instance of every slice in bpreg order (nearest position along the normal).

    Raises:
        ProcessingError: a slice lies farther than half a slice spacing from every instance.
    """
    stored = np.asarray(orient.stored_index(np.arange(orient.n_slices)))
    try:
        return nearest_instances(image.affine, orient.slice_axis, stored, series.instances)
    except InputError as exc:
        raise ProcessingError(f"{exc}; SR not written") from exc


def _report(series: DicomSeries, groups: list, kind: str) -> hd.sr.Comprehensive3DSR:
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=f"{DEVICE_NAME}_{kind}", manufacturer_name=package_name
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=series.instances,
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBER[kind],
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=package_name,
        series_description=DESCRIPTION[kind],
        is_complete=True,
    )


def landmark_groups(curve: ScoreCurve, settings: BpregSettings, instances: list) -> list:
    """One TID 1501 group per covered landmark, referencing the slice nearest its expected score."""
    groups = []
    for name, site in landmark_sites().items():
        if name not in settings.lookuptable:
            continue
        target = landmark_score(settings.lookuptable, name)
        if not landmark_present(curve.cleaned, target):
            continue
        index = int(np.nanargmin(np.abs(curve.cleaned - target)))
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Annotations group landmarks"),
                algorithm_id=ALGORITHM,
                finding_sites=[site],
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(instances[index])],
            )
        )
    return groups


def region_groups(bpreg: dict, instances: list) -> list:
    """One TID 1501 group per slice in at least one region, its regions as finding sites."""
    sites = region_sites()
    per_slice: dict[int, list] = {}
    for region, indices in bpreg["body part examined"].items():
        for index in indices:
            per_slice.setdefault(int(index), []).append(sites[region])
    return [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Annotations group regions"),
            algorithm_id=ALGORITHM,
            finding_sites=found,
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(instances[index])],
        )
        for index, found in sorted(per_slice.items())
    ]


def write_reports(
    series: DicomSeries, image: nib.Nifti1Image, orient: Orientation, curve: ScoreCurve, settings: BpregSettings,
    bpreg: dict, output_dir: Path,
) -> dict[str, Any]:
    """Write both SR files; return what qa.json records about them."""
    instances = slice_instances(series, image, orient)
    written: dict[str, Any] = {}
    for kind, groups in (
        ("landmarks", landmark_groups(curve, settings, instances)),
        ("regions", region_groups(bpreg, instances)),
    ):
        if not groups:
            continue
        document = _report(series, groups, kind)
        path = output_dir / f"bpr_{kind}_sr.dcm"
        buffer = BytesIO()
        document.save_as(buffer, enforce_file_format=True)
        write_atomic(path, buffer.getvalue())
        written[kind] = {"file": path.name, "sop_instance_uid": str(document.SOPInstanceUID), "groups": len(groups)}
    if series.generated_uids:
        written["note"] = (
            "the source had blank " + ", ".join(series.generated_uids)
            + "; the SRs reference generated UIDs that exist nowhere else"
        )
    return written
