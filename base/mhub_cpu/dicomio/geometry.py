"""Voxel grids of DICOM series and NIfTI images, and the axis mapping between them.

A DICOM series sorted along its slice normal defines a grid ``(column, row, slice) → patient``
(PS3.3 C.7.6.2.1.1: Image Position/Orientation (Patient), Pixel Spacing). A NIfTI image of the
same acquisition lies on the same grid up to a permutation and flips of the axes. Finding that
permutation, and refusing anything else, is how we check a conversion's geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from mhub_cpu.core.errors import InputError
from mhub_cpu.dicomio.attributes import numbers


def slice_normal(dataset: Dataset, path: Path | None = None) -> np.ndarray:
    """Unit normal of the image plane: row direction × column direction (PS3.3 C.7.6.2.1.1)."""
    orientation = numbers(dataset, "ImageOrientationPatient", 6, path or Path("the image"))
    normal = np.cross(orientation[:3], orientation[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-3:
        raise InputError("Image Orientation (Patient) row and column directions are parallel")
    return normal / norm


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
    return AxisMapping(order=order, flipped_axes=flipped)  # type: ignore[arg-type]


def dicom_grid_shape(instances: list[Dataset]) -> tuple[int, int, int]:
    """(columns, rows, slices) of sorted instances: the index order of :func:`dicom_grid_affine_ras`."""
    return int(instances[0].Columns), int(instances[0].Rows), len(instances)


def to_dicom_order(array: np.ndarray, affine: np.ndarray, instances: list[Dataset]) -> np.ndarray:
    """An array on a NIfTI grid, rearranged as the series stores pixels: (slice, row, column),
    slices in the order of ``instances``.

    Raises:
        InputError: the grid is not the series' grid up to axis order and flips.
    """
    mapping = axis_mapping(affine, array.shape, dicom_grid_affine_ras(instances), dicom_grid_shape(instances))
    return np.ascontiguousarray(mapping.apply(array).transpose(2, 1, 0))


def nearest_instances(affine: np.ndarray, slice_axis: int, indices: np.ndarray, instances: list[Dataset]) -> list[Dataset]:
    """The instance nearest each slice ``indices`` of a NIfTI grid along ``slice_axis`` (by position
    along the images' normal), so that a series stored, sorted or numbered in any order is matched.

    Raises:
        InputError: a slice lies farther than half a slice spacing from every instance.
    """
    normal = slice_normal(instances[0])
    positions = np.array([np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float)) for ds in instances])
    voxels = np.zeros((4, len(indices)))
    voxels[slice_axis] = indices
    voxels[3] = 1.0
    slice_positions = (np.linalg.inv(LPS_TO_RAS) @ affine @ voxels)[:3].T @ normal
    nearest = np.abs(slice_positions[:, None] - positions[None, :]).argmin(axis=1)
    error = np.abs(slice_positions - positions[nearest])
    spacing = float(np.linalg.norm(affine[:3, slice_axis]))
    if np.any(error > 0.5 * spacing):
        raise InputError(f"the image's slices do not match the DICOM instances (up to {error.max():.2f} mm apart)")
    return [instances[i] for i in nearest]
