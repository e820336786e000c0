"""Checks of the voxel volume itself, the same for DICOM and NIfTI input.

A NIfTI file carries no modality, so "is this CT?" is answered from the intensities, for both
formats alike: CT in Hounsfield units has air (about −1000 HU) in the field of view, or the
padding scanners write outside a circular field of view (−1024 HU and lower). An MR, PET or
unscaled CT volume has no voxel below −500 and is refused.

Non-finite voxels (NaN, ±Inf: some converters write NaN outside the reconstructed field of view)
are replaced by :data:`NON_FINITE_FILL_HU` (air) in a working copy, and the report says how many;
a volume with no finite voxel at all is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from mhub_cpu.core.errors import InputError
from mhub_cpu.core.progress import log
from mhub_cpu.dicomio.nifti import load_nifti, unscaled_array

#: HU written where the input had NaN or ±Inf: air, as outside a scanner's field of view.
NON_FINITE_FILL_HU = -1024.0
#: A CT must have voxels at or below this density (HU): air or out-of-field padding.
AIR_BELOW_HU = -500.0


@dataclass(frozen=True)
class VolumeCheck:
    """What the volume check found: intensity range (HU) and replaced non-finite voxels."""

    hu_range: tuple[float, float]
    non_finite_voxels: int = 0

    def report(self) -> dict:
        info: dict = {"hu_range": [round(self.hu_range[0], 1), round(self.hu_range[1], 1)]}
        if self.non_finite_voxels:
            info["non_finite_voxels"] = {"count": self.non_finite_voxels, "replaced_by_hu": NON_FINITE_FILL_HU}
        return info


def checked_volume(path: Path, work_dir: Path, max_memory_mb: float | None = None) -> tuple[nib.Nifti1Image, VolumeCheck]:
    """Load the volume at ``path`` and check it is a 3-D CT in HU (fixing non-finite voxels); the size
    its header declares is checked first (:func:`~mhub_cpu.dicomio.nifti.input_limit_bytes`).

    Returns:
        The image to process (a working copy when non-finite voxels were replaced) and the check.

    Raises:
        InputError: not a readable 3-D volume, no finite voxel, or intensities that are not CT.
    """
    try:
        image = load_nifti(path)
    except Exception as exc:  # nibabel raises many types for broken files
        raise InputError(f"cannot read {path} as NIfTI: {exc}") from exc
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        image = image.slicer[..., 0]
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"{path.name} has shape {shape}: a 3-D volume is needed (a time series or vector image is not a CT)")
    if min(shape) < 1:
        raise InputError(f"{path.name} has no voxels (shape {shape})")
    try:
        stored, slope, inter = unscaled_array(image, max_memory_mb)
        low, high = float(np.min(stored)), float(np.max(stored))
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read the voxels of {path.name}: {exc}") from exc
    non_finite = 0
    if np.issubdtype(stored.dtype, np.floating) and not (np.isfinite(low) and np.isfinite(high)):
        finite = np.isfinite(stored)
        non_finite = int(finite.size - np.count_nonzero(finite))
        if non_finite == finite.size:
            raise InputError(f"{path.name} holds no finite voxel (all NaN or infinite)")
        hu = np.where(finite, stored * np.float32(slope) + np.float32(inter), np.float32(NON_FINITE_FILL_HU))
        hu = hu.astype(np.float32, copy=False)
        low, high, slope, inter = float(hu.min()), float(hu.max()), 1.0, 0.0
        work_dir.mkdir(parents=True, exist_ok=True)
        fixed = work_dir / "finite.nii"
        nib.save(nib.Nifti1Image(hu, image.affine, image.header), fixed)  # HU as float32, unscaled
        image = load_nifti(fixed)
        log(f"warning: {non_finite} NaN/infinite voxels replaced by {NON_FINITE_FILL_HU:g} HU (air)")
    elif not isinstance(stored, np.memmap) and (slope, inter) == (1.0, 0.0):
        # a decompressed .nii.gz: keep the array, so that the jobs do not decompress it again
        image = nib.Nifti1Image(stored, image.affine, image.header)
    low, high = sorted((low * slope + inter, high * slope + inter))
    if low > AIR_BELOW_HU or high <= low:
        raise InputError(
            f"intensities {low:g}..{high:g} do not look like CT in Hounsfield units "
            f"(a CT has air or padding at or below {AIR_BELOW_HU:g} HU); "
            "these models need CT, not MR, PET or unscaled data"
        )
    return image, VolumeCheck(hu_range=(low, high), non_finite_voxels=non_finite)
