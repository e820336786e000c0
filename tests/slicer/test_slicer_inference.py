"""``mhub-cpu slicer-inference`` run as 3D Slicer's MONAIAuto3DSeg extension runs its inference script.

The extension writes the input volume as an uncompressed LPS NRRD (ITK's writer), runs
``<script> --model-file <models>/<id>/model.pt --image-file input-volume0.nrrd --result-file
output-segmentation.nrrd`` in a subprocess and reads the result back as a label map. Here the
input NRRDs are written by SimpleITK (ITK's writer) from the sample CT, the model folder is the
demo model unpacked as the extension unpacks a catalogue zip, and the result is compared with
``mhub-cpu segment`` on the sample's NIfTI, voxel by voxel in a common (RAS) orientation, and
its header with the input's.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import CT_NIFTI

pytestmark = pytest.mark.slow

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
MODEL_ID = "abdominal-organs-demo-v0.1.0"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mhub_cpu.cli", *args], capture_output=True, text=True, timeout=900, env=env)


def slicer_command(model_file: Path, image_file: Path, result_file: Path, *extra: str) -> list[str]:
    """The extension's arguments (MONAIAuto3DSeg.py, ``auto3DSegCommand``)."""
    return ["--model-file", str(model_file), "--image-file", str(image_file), "--result-file", str(result_file), *extra]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mhub-cpu: error:")]


def unpack_model_folder(demo_model: Path, models: Path) -> Path:
    """The demo zip unpacked as the extension unpacks a catalogue model (``models/<id>/``), labels.csv beside model.pt."""
    folder = models / MODEL_ID
    folder.mkdir(parents=True)
    with zipfile.ZipFile(demo_model) as archive:
        for name in ("labels.csv", "model.pt"):
            (folder / name).write_bytes(archive.read(f"model/{name}"))
    return folder / "model.pt"


def write_slicer_nrrd(image: sitk.Image, path: Path) -> Path:
    """As the extension writes its input: ITK's NRRD writer, compression off (``UseCompressionOff``)."""
    sitk.WriteImage(image, str(path), useCompression=False)
    return path


def ras_stored_ct() -> sitk.Image:
    """The sample CT as Slicer holds a CT (int16), in the NIfTI's voxel order (RAS, so LPS directions −x, −y, +z)."""
    return sitk.Cast(sitk.ReadImage(str(CT_NIFTI)), sitk.sitkInt16)


def lps_stored_ct() -> sitk.Image:
    """The same voxels stored as a DICOM series loads in Slicer: columns to patient left, rows to posterior
    (identity directions in LPS), i.e. the first two axes reversed, the origin at the other corner."""
    source = ras_stored_ct()
    array = sitk.GetArrayFromImage(source)[:, ::-1, ::-1]  # (z, y, x)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(source.GetSpacing())
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    size = source.GetSize()
    image.SetOrigin(source.TransformIndexToPhysicalPoint((size[0] - 1, size[1] - 1, 0)))
    return image


def canonical_labels_from_nrrd(path: Path) -> nib.Nifti1Image:
    """A label NRRD read with SimpleITK (not the reader under test), as a RAS-canonical image."""
    image = sitk.ReadImage(str(path))
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # ITK's index order (i, j, k)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine[:3, 3] = LPS_TO_RAS @ np.array(image.GetOrigin())
    return nib.as_closest_canonical(nib.Nifti1Image(data, affine))


def assert_same_labels(result_nrrd: Path, reference_nifti: Path) -> None:
    result = canonical_labels_from_nrrd(result_nrrd)
    reference = nib.as_closest_canonical(nib.load(reference_nifti))
    np.testing.assert_allclose(result.affine, reference.affine, atol=1e-4)
    ours, theirs = np.asarray(result.dataobj), np.asarray(reference.dataobj)
    assert ours.shape == theirs.shape
    assert len(np.unique(theirs)) > 5, "the reference found structures"
    differing = int(np.count_nonzero(ours != theirs))
    assert differing == 0, f"{differing} voxels differ from mhub-cpu segment's labels"


def assert_header_follows_input(result_nrrd: Path, input_nrrd: Path) -> None:
    """The result's header is the input's (space, directions, origin, sizes, kinds, encoding), labels as uint8."""
    result, source = nrrd.read_header(str(result_nrrd)), nrrd.read_header(str(input_nrrd))
    assert result["type"] == "uint8" and source["type"] == "short"
    assert result["space"] == source["space"] == "left-posterior-superior"
    assert result["encoding"] == source["encoding"] == "raw", "uncompressed, as the input"
    for key in ("sizes", "space directions", "space origin"):
        np.testing.assert_array_equal(result[key], source[key], err_msg=key)
    assert list(result["kinds"]) == list(source["kinds"])
    ours, theirs = sitk.ReadImage(str(result_nrrd)), sitk.ReadImage(str(input_nrrd))
    assert (ours.GetSize(), ours.GetOrigin(), ours.GetSpacing(), ours.GetDirection()) == (
        theirs.GetSize(), theirs.GetOrigin(), theirs.GetSpacing(), theirs.GetDirection())


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> Path:
    return unpack_model_folder(demo_model, tmp_path_factory.mktemp("extension") / "models")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Path:
    """``mhub-cpu segment`` on the sample's NIfTI with the same model folder: the labels to match."""
    output = tmp_path_factory.mktemp("segment")
    result = run_cli("segment", "--input", str(CT_NIFTI), "--output", str(output), "--model", str(model_file.parent), "--precision", "f32")
    assert result.returncode == 0, result.stderr
    return output / "segmentation.nii.gz"


def test_result_matches_segment_voxel_by_voxel(tmp_path: Path, model_file: Path, reference: Path) -> None:
    """The extension's command, with an option the script does not know (ignored, as python-fire's **kwargs)."""
    image = write_slicer_nrrd(ras_stored_ct(), tmp_path / "input-volume0.nrrd")
    result_file = tmp_path / "output-segmentation.nrrd"
    run = run_cli("slicer-inference", *slicer_command(model_file, image, result_file, "--not-a-script-option", "7"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == str(result_file)
    assert "ignoring --not-a-script-option 7" in run.stderr
    assert_same_labels(result_file, reference)
    assert_header_follows_input(result_file, image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input-volume0.nrrd", "output-segmentation.nrrd"], "no work files left"


def test_volume_stored_as_dicom_loads_matches_in_world_space(tmp_path: Path, model_file: Path, reference: Path) -> None:
    """Slicer's usual CT (from DICOM: identity LPS directions) gives the same labels at the same places,
    with the script's underscore spellings of the options."""
    image = write_slicer_nrrd(lps_stored_ct(), tmp_path / "input-volume0.nrrd")
    assert np.allclose(nrrd.read_header(str(image))["space directions"], np.diag([3.0, 3.0, 3.0]))
    result_file = tmp_path / "output-segmentation.nrrd"
    run = run_cli("slicer-inference", "--model_file", str(model_file), "--image_file", str(image), f"--result_file={result_file}")
    assert run.returncode == 0, run.stderr
    assert_same_labels(result_file, reference)
    assert_header_follows_input(result_file, image)


def test_refusals_are_one_line_and_leave_no_result(tmp_path: Path, model_file: Path) -> None:
    image = write_slicer_nrrd(ras_stored_ct(), tmp_path / "input-volume0.nrrd")
    result_file = tmp_path / "output-segmentation.nrrd"
    cases = {
        "image-file-2": (slicer_command(model_file, image, result_file, "--image-file-2", str(image)), 2, "--image-file-2"),
        "missing model": (slicer_command(tmp_path / "models" / "gone" / "model.pt", image, result_file), 3, "model file not found"),
        "missing image": (slicer_command(model_file, tmp_path / "gone.nrrd", result_file), 2, "does not exist"),
    }
    for case, (arguments, code, message) in cases.items():
        result_file.write_bytes(b"an earlier run's result")  # must not pass for this run's
        run = run_cli("slicer-inference", *arguments)
        assert run.returncode == code, (case, run.stderr)
        assert len(error_lines(run.stderr)) == 1 and message in error_lines(run.stderr)[0], (case, run.stderr)
        assert "Traceback" not in run.stderr, case
        assert not result_file.exists(), case
        assert sorted(p.name for p in tmp_path.iterdir()) == ["input-volume0.nrrd"], case


def hidden_converter(folder: Path) -> Path:
    """A PYTHONPATH entry on which torch, MONAI and NNCF are not installed (a runtime-only environment)."""
    for name in ("torch", "monai", "nncf"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f'raise ModuleNotFoundError("{name} is hidden by the test", name={name!r})\n')
    return folder


def test_convert_model_file_then_inference_uses_the_ir_beside_without_torch(tmp_path: Path, demo_model: Path, reference: Path) -> None:
    model_file = unpack_model_folder(demo_model, tmp_path / "models")
    converted = run_cli("convert", "--model-file", str(model_file))
    assert converted.returncode == 0, converted.stderr
    folder = model_file.parent
    assert sorted(p.name for p in folder.iterdir()) == ["labels.csv", "model.bin", "model.openvino.json", "model.pt", "model.xml"]
    sidecar = json.loads((folder / "model.openvino.json").read_text())
    assert sidecar["checkpoint_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest() and sidecar["ir"] == "fp32"
    assert sidecar["bin_sha256"] == hashlib.sha256((folder / "model.bin").read_bytes()).hexdigest()
    assert json.loads(converted.stdout)["xml"] == str(folder / "model.xml")

    empty_cache = tmp_path / "cache"
    env = {**os.environ, "MHUB_CPU_CACHE": str(empty_cache), "PYTHONPATH": str(hidden_converter(tmp_path / "runtime-only"))}
    image = write_slicer_nrrd(ras_stored_ct(), tmp_path / "input-volume0.nrrd")
    result_file = tmp_path / "output-segmentation.nrrd"
    run = run_cli("slicer-inference", *slicer_command(model_file, image, result_file), env=env)
    assert run.returncode == 0, run.stderr
    assert f"using the OpenVINO IR beside model.pt: {folder / 'model.xml'}" in run.stderr
    assert "converting" not in run.stderr and not (empty_cache / "openvino").exists(), "nothing converted or cached"
    assert_same_labels(result_file, reference)

    model_file.write_bytes(model_file.read_bytes() + b"\0")  # a new checkpoint: the IR beside it is stale
    run = run_cli("slicer-inference", *slicer_command(model_file, image, result_file), env=env)
    assert run.returncode == 3, run.stderr
    assert "is not used: it was converted from another checkpoint" in run.stderr
    assert "torch is not installed" in error_lines(run.stderr)[0] and f"convert --model-file {model_file}" in error_lines(run.stderr)[0]
    assert not result_file.exists()


def test_shim_runs_slicer_inference_without_slicers_python_settings(tmp_path: Path, model_file: Path) -> None:
    """The stand-in script, run by another Python as PythonSlicer runs it, with Slicer's PYTHONHOME and
    PYTHONPATH set: mhub-cpu's Python would not start with them (no stdlib there)."""
    generated = run_cli("slicer-shim")
    assert generated.returncode == 0, generated.stderr
    shim = tmp_path / "Scripts" / "auto3dseg_segresnet_inference.py"
    shim.parent.mkdir()
    shim.write_text(generated.stdout)
    slicer_home = tmp_path / "Slicer" / "lib" / "Python"
    (slicer_home / "lib").mkdir(parents=True)
    env = {**os.environ, "PYTHONHOME": str(slicer_home), "PYTHONPATH": str(slicer_home / "lib")}
    image = write_slicer_nrrd(ras_stored_ct(), tmp_path / "input-volume0.nrrd")
    result_file = tmp_path / "output-segmentation.nrrd"
    python = getattr(sys, "_base_executable", sys.executable)  # a Python other than mhub-cpu's, isolated (-I) from those variables
    run = subprocess.run(
        [python, "-I", str(shim), *slicer_command(model_file, image, result_file, "--image-file-2", str(image))],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert run.returncode == 2, run.stderr
    assert error_lines(run.stderr) == [f"mhub-cpu: error: --image-file-2 {image}: models with several input volumes are not "
                                       "supported yet (mhub-cpu runs single-CT models)"]
    assert not result_file.exists()
