"""Slices as bpreg's network sees them: HU window, in-plane resampling to 3.5 mm, 128x128 grid.

Reproduces bpreg 1.1.0 (``Nifti2Npy.preprocess_nifti``): the voxel axes are reordered by the
affine, the whole array is flipped (all three axes) when the slice axis points to the feet,
HU are clipped to [-1000, 1500] and scaled to [-1, 1], each slice is Gaussian-blurred
(sigma 0.8 px at a downscaling factor of 0.25, truncate 3, reflecting borders) and resized
bilinearly (OpenCV ``INTER_LINEAR`` geometry: half-pixel centres, clamped borders) to 3.5 mm
pixels, then padded with -1 or centre-cropped to 128x128.

Blur and resize are linear and separable, so each slice is computed as ``Mx @ slice @ My.T``
with small precomputed float32 matrices, one slab of slices at a time as two plain matrix
products (the slab is read slice-contiguous): the volume is held once in
its stored type (e.g. int16), never as a whole in float. Every row of ``Mx`` and ``My`` sums to
one, so the linear HU-to-[-1, 1] scaling is applied after resizing, to 128x128 instead of
512x512 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..dicomio.nifti import unscaled_array
from ..errors import InputError
from ..progress import ProgressCounter

TARGET_SPACING_MM = 3.5
MIN_HU, MAX_HU = -1000.0, 1500.0
SIZE = 128
BLUR_SIGMA_PX = 0.8
REFERENCE_DOWNSCALING = 0.25
BLUR_TRUNCATE = 3.0
PAD_VALUE = -1.0
SLAB = 32


@dataclass
class Orientation:
    """How the stored voxel array maps to bpreg's (x, y, z-ascending-to-head) array.

    Attributes:
        swap_xy: the two in-plane voxel axes are exchanged (bpreg's axis reordering).
        flip: the slice axis points to the feet, so bpreg flips all three axes.
        spacing: voxel spacing (x, y, z) in mm after reordering.
        n_slices: number of slices.
    """

    swap_xy: bool
    flip: bool
    spacing: tuple[float, float, float]
    n_slices: int

    def stored_index(self, processed_index: np.ndarray | int) -> np.ndarray | int:
        """Index along the stored slice axis of a slice in bpreg's (processed) order."""
        return self.n_slices - 1 - processed_index if self.flip else processed_index


@dataclass
class PreparedSlices:
    """Network input for the scored slices, in bpreg's slice order."""

    slices: np.ndarray  # (n, 128, 128) float32
    indices: np.ndarray  # processed-order index of each row of ``slices``
    orientation: Orientation
    hu_range: tuple[float, float]


def orientation_of(image: nib.Nifti1Image) -> Orientation:
    """bpreg's axis ordering from the affine; refuse stacks whose slice axis is not head-foot.

    Raises:
        InputError: not a 3-D volume, the slice (third) voxel axis is not the one closest to the
            patient's head-foot axis (sagittal or coronal stack), or the axes are ambiguous.
    """
    if len(image.shape) != 3:
        raise InputError(f"expected a 3-D CT volume, got array shape {image.shape}")
    rotation = np.asarray(image.affine[:3, :3], dtype=float)
    ordering = np.argmax(np.abs(rotation), axis=0)
    if sorted(ordering.tolist()) != [0, 1, 2]:
        raise InputError("the volume is too oblique to tell its axial, coronal and sagittal axes apart")
    if ordering[2] != 2:
        names = {0: "left-right", 1: "anterior-posterior"}
        raise InputError(
            f"the volume is not axial: its slices are stacked along the {names[int(ordering[2])]} axis; "
            "body part regression scores axial slices only"
        )
    zooms = [float(z) for z in image.header.get_zooms()[:3]]
    swap = bool(ordering[0] == 1)
    spacing = (zooms[1], zooms[0], zooms[2]) if swap else (zooms[0], zooms[1], zooms[2])
    return Orientation(swap_xy=swap, flip=bool(rotation[2, 2] < 0), spacing=spacing, n_slices=int(image.shape[2]))


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of OpenCV's bilinear resize along one axis."""
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    scale = 1.0 / (n_out / n_in)
    for d in range(n_out):
        f = np.float32((d + 0.5) * scale - 0.5)
        s = int(np.floor(f))
        f = float(f - s)
        if s < 0:
            s, f = 0, 0.0
        if s >= n_in - 1:
            s, f = n_in - 1, 0.0
        matrix[d, s] += 1.0 - f
        if f:
            matrix[d, s + 1] += f
    return matrix


def axis_operator(n_in: int, spacing: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Blur, resize and crop along one in-plane axis as one matrix, plus the padding (before, after).

    Raises:
        InputError: the axis shrinks to fewer than two pixels at 3.5 mm.
    """
    # float32 arithmetic as in bpreg, whose spacings come from the NIfTI header as float32
    scale = np.float32(TARGET_SPACING_MM) / np.float32(spacing)
    n_out = int(np.float32(n_in) / scale + np.float32(0.5))
    if n_out <= 1:
        raise InputError(
            f"an in-plane axis of {n_in} pixels at {spacing:g} mm is smaller than two pixels at {TARGET_SPACING_MM} mm"
        )
    sigma = BLUR_SIGMA_PX * REFERENCE_DOWNSCALING / (n_out / n_in)
    blur = gaussian_filter1d(np.eye(n_in), sigma, axis=0, truncate=BLUR_TRUNCATE, mode="reflect")
    matrix = _resize_matrix(n_in, n_out) @ blur
    if n_out > SIZE:
        start = (n_out - SIZE) // 2
        return matrix[start : start + SIZE], (0, 0)
    return matrix, ((SIZE - n_out) // 2, (SIZE - n_out + 1) // 2)


def prepare_slices(image: nib.Nifti1Image, indices: np.ndarray | None = None) -> PreparedSlices:
    """Network input for the slices at ``indices`` (bpreg order; all slices when ``None``)."""
    orient = orientation_of(image)
    n = orient.n_slices
    indices = np.arange(n) if indices is None else np.asarray(indices, dtype=int)
    nx, ny = (image.shape[1], image.shape[0]) if orient.swap_xy else (image.shape[0], image.shape[1])
    mx, (px0, px1) = axis_operator(nx, orient.spacing[0])
    my, (py0, py1) = axis_operator(ny, orient.spacing[1])
    if orient.flip:  # bpreg flips the in-plane axes as well as the slice axis
        mx, my = mx[:, ::-1], my[:, ::-1]
    mx32, my32 = np.ascontiguousarray(mx, np.float32), np.ascontiguousarray(my, np.float32)
    scale = np.float32(2.0 / (MAX_HU - MIN_HU))
    offset = np.float32(-1.0 - MIN_HU * 2.0 / (MAX_HU - MIN_HU))
    out = np.full((len(indices), SIZE, SIZE), PAD_VALUE, dtype=np.float32)
    stored = np.asarray(orient.stored_index(indices))
    order = np.argsort(stored)  # read the file front to back
    lo, hi = np.inf, -np.inf
    stored_data, slope, inter = unscaled_array(image)
    by_slice = stored_data.T  # (z, j, i): C-contiguous for NIfTI's Fortran-ordered arrays
    progress = ProgressCounter("preprocessing slices", len(indices))
    for start in range(0, len(order), SLAB):
        rows = order[start : start + SLAB]
        slab = by_slice[stored[rows]].astype(np.float32)  # (k, j, i) = (k, y, x), or (k, x, y) when swapped
        if (slope, inter) != (1.0, 0.0):
            slab = slab * np.float32(slope) + np.float32(inter)
        lo, hi = min(lo, float(slab.min())), max(hi, float(slab.max()))
        np.clip(slab, MIN_HU, MAX_HU, out=slab)
        # slab[k] is the bpreg slice A (x, y) when swapped, else A.T (y, x); both products are plain GEMMs
        first, second = (my32, mx32) if orient.swap_xy else (mx32, my32)
        k, n1, n2 = slab.shape
        half = (slab.reshape(k * n1, n2) @ first.T).reshape(k, n1, -1)
        resized = (np.ascontiguousarray(half.transpose(0, 2, 1)).reshape(-1, n1) @ second.T).reshape(k, half.shape[2], -1)
        if orient.swap_xy:
            resized = resized.transpose(0, 2, 1)
        out[rows, px0 : SIZE - px1, py0 : SIZE - py1] = resized * scale + offset
        progress.update(min(start + SLAB, len(order)))
    return PreparedSlices(slices=out, indices=indices, orientation=orient, hu_range=(lo, hi))
