"""NRRD in and out, as 3D Slicer's MONAIAuto3DSeg exchanges volumes with its inference script.

The extension writes the input volume with Slicer's volume storage node (ITK's NRRD writer,
uncompressed, ``space: left-posterior-superior``) and reads the result back as a label map. Its
script writes the result with pynrrd and the *input's* header, only the voxels replaced, so here
too the result keeps every field of the input header (space, space directions, origin, kinds,
encoding, custom ``key:=value`` fields) except those that describe the input's own voxels (type,
value range, where the data was).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mhub_cpu.core.errors import InputError, ProcessingError

#: Sign of each world axis of a named NRRD space relative to RAS (NIfTI's world).
SPACE_TO_RAS: dict[str, tuple[float, float, float]] = {
    "right-anterior-superior": (1.0, 1.0, 1.0), "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0), "las": (-1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0), "lps": (-1.0, -1.0, 1.0),
}
#: Header fields about the input's voxels or data location, which the result must not repeat.
INPUT_DATA_FIELDS = ("min", "max", "oldmin", "old min", "oldmax", "old max", "data file", "datafile",
                     "line skip", "lineskip", "byte skip", "byteskip")


@dataclass
class NrrdVolume:
    """A 3-D scalar NRRD: voxels in NRRD's axis order (fastest first), its header, and where it lies."""

    data: np.ndarray
    header: dict[str, Any]
    affine: np.ndarray  #: voxel index → RAS millimetres (NIfTI's convention)


def read_nrrd(path: Path) -> NrrdVolume:
    """Read a 3-D scalar NRRD placed in a named patient space (RAS, LAS or LPS).

    Raises:
        InputError: not a readable NRRD, not 3-D scalar, or not placed in a patient space.
    """
    import nrrd

    try:
        data, header = nrrd.read(str(path))
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, OSError, zlib errors … for broken files
        raise InputError(f"cannot read {path} as NRRD: {exc}") from exc
    if data.ndim != 3:
        raise InputError(f"{path.name} has {data.ndim} dimensions (sizes {list(data.shape)}): a 3-D scalar volume is needed")
    return NrrdVolume(data=data, header=dict(header), affine=header_affine(header, path))


def header_affine(header: dict[str, Any], path: Path) -> np.ndarray:
    """The voxel → RAS affine of a NRRD header (``space``, ``space directions``, ``space origin``).

    Raises:
        InputError: no named patient space, or axes without a direction in it.
    """
    space = str(header.get("space", "")).lower()
    if space not in SPACE_TO_RAS:
        found = f"space {header['space']!r}" if "space" in header else "no space field"
        raise InputError(
            f"{path.name} has {found}: the volume must be placed in a patient space (left-posterior-superior, as Slicer "
            "writes, or RAS / LAS)"
        )
    directions = np.asarray(header.get("space directions"), dtype=float)
    if directions.shape != (3, 3) or not np.isfinite(directions).all() or abs(np.linalg.det(directions)) < 1e-12:
        raise InputError(f"{path.name} has no usable space directions for its three axes: {header.get('space directions')}")
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=float)
    if origin.shape != (3,) or not np.isfinite(origin).all():
        raise InputError(f"{path.name} has an unusable space origin: {header.get('space origin')}")
    flip = np.diag(SPACE_TO_RAS[space])
    affine = np.eye(4)
    affine[:3, :3] = flip @ directions.T  # row i of "space directions" is axis i's step in the space
    affine[:3, 3] = flip @ origin
    return affine


def write_working_nifti(volume: NrrdVolume, path: Path) -> Path:
    """The volume as an uncompressed NIfTI (same voxel order, RAS affine) for the engine's volume checks."""
    data = volume.data
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, volume.affine)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, path)
    return path


def write_label_nrrd(path: Path, labels: np.ndarray, input_header: dict[str, Any]) -> None:
    """Write ``labels`` (on the input's grid, in its axis order) as NRRD with the input's header.

    The labels are stored as uint8 (as the Slicer script writes them) or, above 255, uint16.
    """
    import nrrd

    expected = [int(n) for n in input_header["sizes"]]
    if list(labels.shape) != expected:
        raise ProcessingError(f"the label map has shape {list(labels.shape)}, the input NRRD {expected}")
    dtype = np.uint8 if int(labels.max(initial=0)) <= np.iinfo(np.uint8).max else np.uint16
    header = {key: value for key, value in input_header.items() if key not in INPUT_DATA_FIELDS}
    with open(path, "wb") as handle:
        nrrd.write(handle, np.asarray(labels, dtype=dtype), header)
