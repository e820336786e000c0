"""Choosing the CT series to process among those found."""

from __future__ import annotations

from pathlib import Path

from mhub_cpu.core.errors import InputError
from mhub_cpu.dicomio.series import DicomSeries


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
