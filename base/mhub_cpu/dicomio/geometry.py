"""Voxel grids of DICOM series and NIfTI images, and the axis mapping between them.

A DICOM series sorted along its slice normal defines a grid ``(column, row, slice) → patient``
(PS3.3 C.7.6.2.1.1: Image Position/Orientation (Patient), Pixel Spacing). A NIfTI image of the
same acquisition lies on the same grid up to a permutation and flips of the axes. Finding that
permutation, and refusing anything else, is how we check a conversion's geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from ..errors import InputError
from .series import slice_normal

#: Patient LPS (DICOM) to RAS (NIfTI) coordinate flip.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def dicom_grid_affine_ras(instances: list[Dataset]) -> np.ndarray:
    """Affine mapping (column, row, slice) indices of sorted instances to RAS millimetres."""
    first, last = instances[0], instances[-1]
    orientation = np.asarray([float(v) for v in first.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    origin = np.asarray([float(v) for v in first.ImagePositionPatient])
    if len(instances) > 1:
        slice_step = (np.asarray([float(v) for v in last.ImagePositionPatient]) - origin) / (len(instances) - 1)
    else:
        slice_step = slice_normal(first) * float(first.get("SliceThickness", 1.0) or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * column_spacing  # along a row: next column
    affine[:3, 1] = orientation[3:] * row_spacing  # along a column: next row
    affine[:3, 2] = slice_step
    affine[:3, 3] = origin
    return LPS_TO_RAS @ affine


@dataclass(frozen=True)
class AxisMapping:
    """How to turn an array on grid A into an array on grid B by transposition and flips.

    ``array_b = np.flip(array_a.transpose(order), axis=flipped_axes)``
    """

    order: tuple[int, int, int]
    flipped_axes: tuple[int, ...]

    def apply(self, array_a: np.ndarray) -> np.ndarray:
        out = array_a.transpose(self.order)
        return np.flip(out, axis=self.flipped_axes) if self.flipped_axes else out

    def invert(self, array_b: np.ndarray) -> np.ndarray:
        flipped = np.flip(array_b, axis=self.flipped_axes) if self.flipped_axes else array_b
        return flipped.transpose(np.argsort(self.order))


def axis_mapping(
    affine_a: np.ndarray, shape_a: tuple[int, ...], affine_b: np.ndarray, shape_b: tuple[int, ...],
    tolerance_mm: float = 0.1,
) -> AxisMapping:
    """Mapping from grid A to grid B, which must be the same voxels in another axis order.

    Raises:
        InputError: if the grids are not related by axis permutation and flips (different
            spacing, extent, origin or obliquity beyond ``tolerance_mm``).
    """
    index_map = np.linalg.solve(affine_a, affine_b)  # B indices -> A indices
    linear = index_map[:3, :3]
    order = tuple(int(np.argmax(np.abs(linear[:, axis_b]))) for axis_b in range(3))
    if sorted(order) != [0, 1, 2]:
        raise InputError(f"image grids differ in axis directions:\nA={affine_a}\nB={affine_b}")
    expected = np.zeros((3, 3))
    for axis_b, axis_a in enumerate(order):
        expected[axis_a, axis_b] = np.sign(linear[axis_a, axis_b])
    if np.abs(linear - expected).max() > 1e-3:
        raise InputError("image grids differ in spacing or direction (not a pure axis permutation/flip)")
    if tuple(shape_a[axis] for axis in order) != tuple(shape_b):
        raise InputError(f"image grid sizes differ: {tuple(shape_a)} vs {tuple(shape_b)} after reordering")
    flipped = tuple(axis_b for axis_b, axis_a in enumerate(order) if expected[axis_a, axis_b] < 0)
    # Check translation: B voxel 0 must map to A's voxel at the corresponding (possibly far) corner.
    target_a = np.zeros(3)
    for axis_b, axis_a in enumerate(order):
        if axis_b in flipped:
            target_a[axis_a] = shape_a[axis_a] - 1
    offset_mm = np.abs(affine_a[:3, :3] @ (index_map[:3, 3] - target_a)).max()
    if offset_mm > tolerance_mm:
        raise InputError(f"image grids are shifted by {offset_mm:.3f} mm")
    return AxisMapping(order=order, flipped_axes=flipped)
