"""Benchmark workloads: model zips with fixed-seed random weights, and their CT inputs.

W1: the abdominal-organs architecture (SegResNetDS, init_filters 32, blocks_down 1-2-2-4-4,
dsdepth 4, 25 outputs, roi 224×224×144) at 1.5 mm on the 112-slice sample series.
W2: the same network as a 3 mm quick model. W3: the whole-body architecture (118 outputs) at
1.5 mm on a chest–abdomen–pelvis-sized series built from the sample CT. W4: the same whole-body
network as the 3 mm quick model (``whole-body-3mm-v2.0.0``, the default of ``models/wholebody_openvino``)
on W3's series. D: the trained demo model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.uid import generate_uid

from mhub_cpu.core.progress import log
from mhub_cpu.core.resources import demo_model_path
from mhub_cpu_dev.data import SAMPLE_DICOM, SAMPLE_NIFTI
from mhub_cpu_dev.standins.auto3dseg import write_random_model


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    model: Path
    input_dir: Path


def write_large_series(target: Path, shape: tuple[int, int, int] = (320, 240, 400), spacing: float = 1.5) -> Path:
    """A chest–abdomen–pelvis-sized CT series built from the sample CT.

    The 3 mm sample is resampled to ``spacing`` and stretched in-plane to ``shape[:2]``; along z it
    is repeated mirror-wise until ``shape[2]`` slices. Written as int16 CT Image Storage files with
    fresh UIDs, headers modelled on the sample series.
    """
    if target.exists() and len(list(target.iterdir())) == shape[2]:
        return target
    from scipy.ndimage import zoom

    image = nib.as_closest_canonical(nib.load(SAMPLE_NIFTI))
    data = np.asarray(image.dataobj, dtype=np.float32)
    factors = (shape[0] / data.shape[0], shape[1] / data.shape[1], 3.0 / spacing)
    volume = zoom(data, factors, order=1)
    repeats = int(np.ceil(shape[2] / volume.shape[2]))
    volume = np.concatenate([volume if i % 2 == 0 else volume[:, :, ::-1] for i in range(repeats)], axis=2)[:, :, : shape[2]]
    volume = np.clip(np.rint(volume), -1024, 3071).astype(np.int16)

    template = pydicom.dcmread(sorted(SAMPLE_DICOM.iterdir())[0])
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    target.mkdir(parents=True, exist_ok=True)
    origin = np.array([-(shape[0] - 1) * spacing / 2, -(shape[1] - 1) * spacing / 2, 0.0])  # RAS centre-ish
    for k in range(shape[2]):
        dataset = template.copy()
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.FrameOfReferenceUID = study, series, frame
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.SeriesDescription = "benchmark W3 chest-abdomen-pelvis size"
        dataset.InstanceNumber = k + 1
        # Rows run posterior→anterior reversed (LPS +y = posterior), columns right→left (LPS +x = left).
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        x0 = -(origin[0] + (shape[0] - 1) * spacing)  # LPS x of column 0 (patient right)
        y0 = -(origin[1] + (shape[1] - 1) * spacing)  # LPS y of row 0 (anterior)
        dataset.ImagePositionPatient = [float(x0), float(y0), float(origin[2] + k * spacing)]
        dataset.PixelSpacing = [spacing, spacing]
        dataset.SliceThickness = spacing
        dataset.Rows, dataset.Columns = shape[1], shape[0]
        pixels = volume[::-1, ::-1, k].T  # (row: anterior→posterior, column: right→left)
        dataset.PixelData = np.ascontiguousarray(pixels).tobytes()
        dataset.save_as(target / f"CT_{k + 1:04d}.dcm", enforce_file_format=True)
    log(f"wrote {shape[2]}-slice benchmark series {target}")
    return target


def build_workloads(root: Path, names: list[str]) -> list[Workload]:
    """Create (once) and return the requested workloads under ``root``."""
    models = root / "models"
    available = {
        "W1": lambda: Workload("W1", "abdominal-organs architecture, 1.5 mm, random weights, 112-slice series",
                               write_random_model(models / "w1-abdominal-1.5mm-v0.0.0.zip", "abdominal-organs", ["Thyroid gland"], 1.5), SAMPLE_DICOM),
        "W2": lambda: Workload("W2", "same network as a 3 mm quick model, random weights, 112-slice series",
                               write_random_model(models / "w2-abdominal-3mm-v0.0.0.zip", "abdominal-organs", ["Thyroid gland"], 3.0), SAMPLE_DICOM),
        "W3": lambda: Workload("W3", "whole-body architecture (118 outputs), 1.5 mm, random weights, 320x240x400 series",
                               write_random_model(models / "w3-whole-body-1.5mm-v0.0.0.zip", "whole-body", [], 1.5),
                               write_large_series(root / "inputs" / "w3_dicom")),
        "W4": lambda: Workload("W4", "whole-body architecture (118 outputs) as the 3 mm quick model, random weights, W3's 320x240x400 series",
                               write_random_model(models / "w4-whole-body-3mm-v0.0.0.zip", "whole-body-3mm-v2.0.0", [], 3.0),
                               write_large_series(root / "inputs" / "w3_dicom")),
        "D": lambda: Workload("D", "trained demo model (2.2 mm), 112-slice series", demo_model_path(), SAMPLE_DICOM),
    }
    unknown = set(names) - set(available)
    if unknown:
        raise ValueError(f"unknown workloads {sorted(unknown)}; choose from {sorted(available)}")
    return [available[name]() for name in names]
