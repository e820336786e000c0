"""PNG preview of a segmentation: axial and coronal slices with coloured label overlays."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw

from mhub_cpu.auto3dseg.labels import Label

#: CT display window (centre, width) in HU: soft tissue.
WINDOW = (40.0, 400.0)
#: Overlay opacity.
ALPHA = 0.45


def _palette(labels: list[Label], max_value: int) -> np.ndarray:
    colors = np.zeros((max_value + 1, 3), dtype=np.float32)
    rng = np.random.default_rng(0)
    for value in range(1, max_value + 1):
        colors[value] = rng.integers(60, 255, 3)
    for label in labels:
        if label.color and label.value <= max_value:
            colors[label.value] = label.color
    return colors


def _blend(ct_slice: np.ndarray, label_slice: np.ndarray, palette: np.ndarray) -> np.ndarray:
    centre, width = WINDOW
    gray = np.clip((ct_slice - (centre - width / 2)) / width, 0, 1) * 255
    rgb = np.repeat(gray[..., None], 3, axis=2)
    mask = label_slice > 0
    rgb[mask] = (1 - ALPHA) * rgb[mask] + ALPHA * palette[label_slice[mask]]
    return rgb.astype(np.uint8)


def write_preview(image: nib.Nifti1Image, labels: nib.Nifti1Image, label_info: list[Label], output_path: Path) -> None:
    """Write a PNG with the axial and coronal slices through the centre of the labelled region.

    Both images are reoriented to RAS and shown in radiological convention (patient's right on the
    left of the picture, anterior up in axial, superior up in coronal), at isotropic pixel size.
    """
    ct = np.asarray(nib.as_closest_canonical(image).dataobj, dtype=np.float32)
    canonical_labels = nib.as_closest_canonical(labels)
    seg = np.asarray(canonical_labels.dataobj).astype(np.int64)
    spacing = canonical_labels.header.get_zooms()[:3]
    coords = np.argwhere(seg > 0)
    centre = coords.mean(axis=0).round().astype(int) if len(coords) else np.array(seg.shape) // 2
    palette = _palette(label_info, int(seg.max()))

    axial = _blend(ct[:, :, centre[2]], seg[:, :, centre[2]], palette)  # (x, y)
    coronal = _blend(ct[:, centre[1], :], seg[:, centre[1], :], palette)  # (x, z)
    panels = [
        # RAS arrays: +x is the patient's right, so flipping both picture axes puts the patient's
        # right on the picture's left and anterior (axial) / superior (coronal) at the top.
        _to_picture(np.transpose(axial, (1, 0, 2))[::-1, ::-1], spacing[0], spacing[1]),
        _to_picture(np.transpose(coronal, (1, 0, 2))[::-1, ::-1], spacing[0], spacing[2]),
    ]
    height = max(p.height for p in panels) + 20
    canvas = Image.new("RGB", (sum(p.width for p in panels) + 10, height), "black")
    x = 0
    draw = ImageDraw.Draw(canvas)
    for panel, title in zip(panels, ("axial", "coronal")):
        canvas.paste(panel, (x, 20))
        draw.text((x + 4, 4), title, fill="white")
        x += panel.width + 10
    output_path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(output_path)


def _to_picture(rgb: np.ndarray, column_spacing: float, row_spacing: float, pixel_mm: float | None = None) -> Image.Image:
    """RGB array → image with square pixels; columns run patient right→left (radiological view)."""
    picture = Image.fromarray(np.ascontiguousarray(rgb))
    pixel_mm = pixel_mm or min(column_spacing, row_spacing)
    width = max(int(round(rgb.shape[1] * column_spacing / pixel_mm)), 1)
    height = max(int(round(rgb.shape[0] * row_spacing / pixel_mm)), 1)
    scale = 512 / max(width, height)
    return picture.resize((int(width * scale), int(height * scale)), Image.Resampling.NEAREST)
