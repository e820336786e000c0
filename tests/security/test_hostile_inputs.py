"""Hostile inputs: NIfTI headers that claim more than the file holds or the machine can hold are
refused from the header, in a fraction of the memory they claim."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from childproc import run_measured
from conftest import CT_NIFTI
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
    ((8192, 8192, 8192), 1024, r"its header declares 8192x8192x8192 voxels of int16 \(1024\.0 GiB\), more than the"),
    ((1024, 1024, 256), 1024, r"holds 1024 bytes of voxel data; its header declares 536870912"),
])
def test_a_nifti_header_claiming_more_than_is_there_is_refused_cheaply(
    tmp_path: Path, command: str, shape: tuple[int, int, int], payload: int, message: str, demo_model: Path, bpr_model: Path,
) -> None:
    import re

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
