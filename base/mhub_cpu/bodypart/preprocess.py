"""Slices as bpreg's network sees them: HU window, in-plane resampling to 3.5 mm, 128x128 grid.

Reproduces bpreg 1.1.0 (``Nifti2Npy.preprocess_nifti``): the voxel axes are reordered by the
affine (any storage order: the voxel axis nearest the patient's head-foot axis becomes the slice
axis), the whole array is flipped (all three axes) when the slice axis points to the feet,
HU are clipped to [-1000, 1500] and scaled to [-1, 1], each slice is Gaussian-blurred
(sigma 0.8 px at a downscaling factor of 0.25, truncate 3, reflecting borders) and resized
bilinearly (OpenCV ``INTER_LINEAR`` geometry: half-pixel centres, clamped borders) to 3.5 mm
pixels, then padded with -1 or centre-cropped to 128x128.

bpreg decides the flip from ``affine[j, 2]`` where ``j`` is the voxel axis nearest head-foot;
that is the slice axis's own head-foot component ``affine[2, j]`` only when ``j`` is 2 or the
storage order swaps ``j`` with axis 2. For the other orders (e.g. PIR, ILA) bpreg reads the
component of another axis, and we use the slice axis's own (so a CT scores the same in any axis
order); the two agree for every axial-stored volume.

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

from mhub_cpu.convert.bodypart import SIZE  # the network input: SIZE x SIZE slices
from mhub_cpu.core.errors import InputError
from mhub_cpu.core.progress import ProgressCounter
from mhub_cpu.dicomio.nifti import unscaled_array

TARGET_SPACING_MM = 3.5
MIN_HU, MAX_HU = -1000.0, 1500.0
BLUR_SIGMA_PX = 0.8
REFERENCE_DOWNSCALING = 0.25
BLUR_TRUNCATE = 3.0
PAD_VALUE = -1.0
SLAB = 32


@dataclass
class Orientation:
    """How the stored voxel array maps to bpreg's (x, y, z-ascending-to-head) array.

    Attributes:
        axes: The stored voxel axis that becomes bpreg's x, y and z (slice) axis.
        flip: the slice axis points to the feet, so bpreg flips all three axes.
        spacing: voxel spacing (x, y, z) in mm after reordering.
        n_slices: number of slices.
    """

    axes: tuple[int, int, int]
    flip: bool
    spacing: tuple[float, float, float]
    n_slices: int

    @property
    def slice_axis(self) -> int:
        """The stored voxel axis along which the slices are stacked."""
        return self.axes[2]

    def stored_index(self, processed_index: np.ndarray | int) -> np.ndarray | int:
        """Index along the stored slice axis of a slice in bpreg's (processed) order."""
        return self.n_slices - 1 - processed_index if self.flip else processed_index


@dataclass
class PreparedSlices:
    """Network input for the scored slices, in bpreg's slice order."""

    slices: np.ndarray  # (n, 128, 128) float32
    indices: np.ndarray  # processed-order index of each row of ``slices``
    orientation: Orientation


def orientation_of(image: nib.Nifti1Image) -> Orientation:
    """bpreg's axis ordering from the affine, for volumes stored in any axis order.

    Raises:
        InputError: not a 3-D volume, or too oblique to tell its axes apart.
    """
    if len(image.shape) != 3:
        raise InputError(f"expected a 3-D CT volume, got array shape {image.shape}")
    rotation = np.asarray(image.affine[:3, :3], dtype=float)
    ordering = np.argmax(np.abs(rotation), axis=0)  # patient axis nearest each voxel axis
    if sorted(ordering.tolist()) != [0, 1, 2]:
        raise InputError("the volume is too oblique to tell its axial, coronal and sagittal axes apart")
    axes = tuple(int(a) for a in np.argsort(ordering))
    zooms = [float(z) for z in image.header.get_zooms()[:3]]
    spacing = (zooms[axes[0]], zooms[axes[1]], zooms[axes[2]])
    return Orientation(
        axes=axes, flip=bool(rotation[2, axes[2]] < 0), spacing=spacing,  # type: ignore[arg-type]
        n_slices=int(image.shape[axes[2]]),
    )


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of OpenCV's bilinear resize along one axis."""
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    scale = 1.0 / (n_out / n_in)
    for d in range(n_out):
        position = np.float32((d + 0.5) * scale - 0.5)
        s = int(np.floor(position))
        f = float(position - s)
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
    indices = np.arange(orient.n_slices) if indices is None else np.asarray(indices, dtype=int)
    nx, ny = image.shape[orient.axes[0]], image.shape[orient.axes[1]]
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
    stored_data, slope, inter = unscaled_array(image)
    # (z, y, x) in bpreg's axes: C-contiguous for axial-stored NIfTI (Fortran order), a view otherwise
    by_slice = stored_data.transpose(orient.axes[2], orient.axes[1], orient.axes[0])
    progress = ProgressCounter("preprocessing slices", len(indices))
    for start in range(0, len(order), SLAB):
        rows = order[start : start + SLAB]
        slab = by_slice[stored[rows]].astype(np.float32)  # (k, y, x)
        if (slope, inter) != (1.0, 0.0):
            slab = slab * np.float32(slope) + np.float32(inter)
        np.clip(slab, MIN_HU, MAX_HU, out=slab)
        # slab[k] is bpreg's slice A (x, y) transposed; A' = Mx A My^T as two plain GEMMs
        k, n1, n2 = slab.shape
        half = (slab.reshape(k * n1, n2) @ mx32.T).reshape(k, n1, -1)  # (k, y, X)
        resized = (np.ascontiguousarray(half.transpose(0, 2, 1)).reshape(-1, n1) @ my32.T).reshape(k, half.shape[2], -1)
        out[rows, px0 : SIZE - px1, py0 : SIZE - py1] = resized * scale + offset
        progress.update(min(start + SLAB, len(order)))
    return PreparedSlices(slices=out, indices=indices, orientation=orient)
