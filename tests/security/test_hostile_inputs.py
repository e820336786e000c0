"""Hostile inputs: NIfTI and DICOM headers that claim more than the file holds, the machine can hold,
or ``--max-memory`` allows are refused from the header, in a fraction of the memory they claim."""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from childproc import run_measured
from conftest import CT_DICOM, CT_NIFTI
from mhub_cpu_dev.standins.bodypart import random_state_dict, write_model_dir

#: A refusal's peak memory (VmHWM): the engine's imports and the header, nothing near the claim.
PEAK_BOUND_MIB = 600


def lying_nifti(path: Path, shape: tuple[int, int, int], payload: int) -> Path:
    """A ``.nii.gz`` whose header declares ``shape`` int16 voxels over ``payload`` bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape(shape)
    header.set_zooms((1.0, 1.0, 1.0))
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * (352 - len(header.binaryblock)) + np.full(payload // 2, -1000, np.int16).tobytes()
    path.write_bytes(gzip.compress(raw, compresslevel=1))
    return path


@pytest.fixture(scope="module")
def bpr_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("bpr") / "model", random_state_dict(seed=5))


@pytest.mark.parametrize("command", ["segment", "bodypart"])
@pytest.mark.parametrize("shape,payload,message", [
    ((8192, 8192, 8192), 1024, r"its header declares 8192x8192x8192 voxels of int16 \(1048576 MiB\), more than the \d+ MiB an "
                               r"input may hold \(a quarter of the memory available here\)"),
    ((1024, 1024, 256), 1024, r"holds 1024 bytes of voxel data; its header declares 536870912"),
])
def test_a_nifti_header_claiming_more_than_is_there_is_refused_cheaply(
    tmp_path: Path, command: str, shape: tuple[int, int, int], payload: int, message: str, demo_model: Path, bpr_model: Path,
) -> None:
    source = lying_nifti(tmp_path / "claim.nii.gz", shape, payload)
    out = tmp_path / "out"
    model = ["--model", str(demo_model if command == "segment" else bpr_model)]
    result, peak = run_measured([sys.executable, "-m", "mhub_cpu.cli", command, "--input", str(source), "--output", str(out), *model])
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("mhub-cpu: error: claim.nii.gz") and re.search(message, line), line
    assert "Traceback" not in result.stderr
    assert not (out / "segmentation.dcm").exists() and not (out / "bpreg.json").exists()
    assert peak < PEAK_BOUND_MIB, f"peak {peak:.0f} MiB while refusing a header"


def test_the_chunked_reader_returns_what_nibabel_reads() -> None:
    from mhub_cpu.dicomio.nifti import load_nifti, unscaled_array

    ours, slope, inter = unscaled_array(load_nifti(CT_NIFTI))
    theirs = nib.load(CT_NIFTI).dataobj
    assert np.array_equal(ours, np.asanyarray(theirs.get_unscaled())) and ours.dtype == theirs.get_unscaled().dtype
    assert (slope, inter) == (float(theirs.slope), float(theirs.inter))


def test_max_memory_bounds_what_a_nifti_header_may_declare(tmp_path: Path, demo_model: Path) -> None:
    source = lying_nifti(tmp_path / "big.nii.gz", (512, 512, 400), 1024)  # 200 MiB declared
    command = [sys.executable, "-m", "mhub_cpu.cli", "segment", "--input", str(source), "--output", str(tmp_path / "out"),
               "--model", str(demo_model), "--max-memory", "400"]
    result, peak = run_measured(command)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "mhub-cpu: error: big.nii.gz: its header declares 512x512x400 voxels of int16 (200 MiB), more than the 100 MiB an "
        "input may hold (a quarter of --max-memory 400 MiB)")
    assert peak < PEAK_BOUND_MIB and not (tmp_path / "out" / "segmentation.nii.gz").exists()


def test_max_memory_bounds_what_dicom_headers_may_declare(tmp_path: Path, demo_model: Path) -> None:
    """Rows and Columns claiming 4096 x 4096 over the sample's real pixels: refused from the headers."""
    import pydicom

    series = tmp_path / "series"
    series.mkdir()
    for path in sorted(CT_DICOM.glob("*.dcm"))[:12]:
        dataset = pydicom.dcmread(path)
        dataset.Rows = dataset.Columns = 4096
        dataset.save_as(series / path.name)
    command = [sys.executable, "-m", "mhub_cpu.cli", "segment", "--input", str(series), "--output", str(tmp_path / "out"),
               "--model", str(demo_model), "--max-memory", "1000"]
    result, peak = run_measured(command)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"mhub-cpu: error: series [\d.]+: its headers declare 12 slices of 4096x4096 at 16 bits \(384 MiB\), "
                        r"more than the 250 MiB an input may hold \(a quarter of --max-memory 1000 MiB\)", line), line
    assert peak < PEAK_BOUND_MIB and not (tmp_path / "out" / "segmentation.dcm").exists()
