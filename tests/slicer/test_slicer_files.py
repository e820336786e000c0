"""The pieces of ``slicer-inference``: the script's argument rules, NRRD geometry and header, the IR beside
``model.pt``, and the ``whole-head`` post-processing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nrrd
import numpy as np
import pytest

from mhub_cpu.auto3dseg.bundle import ModelBundle
from mhub_cpu.cli.slicer import _script_parser, split_arguments
from mhub_cpu.convert.auto3dseg import CACHE_FORMAT
from mhub_cpu.core.errors import InputError
from mhub_cpu.runtime.precision import IrFormat, Precision
from mhub_cpu.slicer.inference import keep_largest_components
from mhub_cpu.slicer.model_folder import ir_beside
from mhub_cpu.slicer.nrrd_files import header_affine, read_nrrd, write_label_nrrd


def test_arguments_follow_python_fire() -> None:
    """Both spellings, ``--name=value``, and options the script does not name ignored with their value."""
    parser = _script_parser()
    known, ignored = split_arguments(
        ["--model_file", "m.pt", "--image-file=in.nrrd", "--overlap", "0.5", "--result-file", "out.nrrd", "--flag", "--save_mode", "x"], parser,
    )
    assert ignored == ["--overlap 0.5", "--flag"]
    options = parser.parse_args(known)
    assert (str(options.model_file), str(options.image_file), str(options.result_file), options.save_mode) == ("m.pt", "in.nrrd", "out.nrrd", "x")
    assert options.image_file_2 is None and options.precision == "f32"
    with pytest.raises(InputError, match="unexpected argument 'stray'"):
        split_arguments(["stray", "--model-file", "m.pt"], parser)


@pytest.mark.parametrize(("space", "flip"), [("left-posterior-superior", (-1, -1, 1)), ("RAS", (1, 1, 1)), ("left-anterior-superior", (-1, 1, 1))])
def test_header_affine_maps_the_named_space_to_ras(space: str, flip: tuple[int, int, int]) -> None:
    directions = np.array([[0.0, 0.8, 0.0], [-0.7, 0.0, 0.0], [0.0, 0.0, 2.5]])  # axis 0 along +y, axis 1 along −x
    header = {"space": space, "space directions": directions, "space origin": np.array([10.0, 20.0, 30.0])}
    affine = header_affine(header, Path("x.nrrd"))
    voxel = np.array([2.0, 3.0, 4.0, 1.0])
    world = np.array([10.0, 20.0, 30.0]) + voxel[:3] @ directions
    np.testing.assert_allclose(affine @ voxel, [*(np.array(flip) * world), 1.0])


def test_volumes_without_a_patient_space_are_refused() -> None:
    directions = np.eye(3)
    with pytest.raises(InputError, match="space 'scanner-xyz'"):
        header_affine({"space": "scanner-xyz", "space directions": directions}, Path("x.nrrd"))
    with pytest.raises(InputError, match="no space field"):
        header_affine({"space directions": directions}, Path("x.nrrd"))
    with pytest.raises(InputError, match="no usable space directions"):
        header_affine({"space": "LPS", "space directions": np.array([[np.nan] * 3, [1, 0, 0], [0, 1, 0]])}, Path("x.nrrd"))


def test_label_nrrd_keeps_the_input_header(tmp_path: Path) -> None:
    """Every field but the input's type, value range and data location, as the Slicer script's nrrd.write(header)."""
    source = tmp_path / "in.nrrd"
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.7, 0.7, 2.0]), "space origin": np.array([1.0, 2.0, 3.0]),
              "kinds": ["domain"] * 3, "encoding": "gzip", "min": -1024, "max": 3071, "Slicer_custom_key": "kept"}
    nrrd.write(str(source), np.full((4, 3, 2), -5, dtype=np.int16), header)
    volume = read_nrrd(source)
    labels = np.zeros((4, 3, 2), dtype=np.uint16)
    labels[1, 2, 1] = 7
    write_label_nrrd(tmp_path / "out.nrrd", labels, volume.header)
    data, written = nrrd.read(str(tmp_path / "out.nrrd"))
    assert data.dtype == np.uint8 and data[1, 2, 1] == 7 and int(data.sum()) == 7
    assert written["encoding"] == "gzip" and written["Slicer_custom_key"] == "kept" and "min" not in written and "max" not in written
    np.testing.assert_array_equal(written["space directions"], header["space directions"])
    labels[0, 0, 0] = 300
    write_label_nrrd(tmp_path / "wide.nrrd", labels, volume.header)
    assert nrrd.read(str(tmp_path / "wide.nrrd"))[0].dtype == np.uint16


def test_keep_largest_components_per_label_26_connected() -> None:
    """As the Slicer script's ``KeepLargestConnectedComponentd(num_components=2)`` for ``whole-head`` models:
    per label, the two largest components stay (voxels touching at a corner are connected)."""
    labels = np.zeros((30, 30, 30), dtype=np.uint8)
    labels[1:6, 1:6, 1:6] = 1  # 125 voxels
    labels[10:13, 10:13, 10:13] = 1  # 27
    labels[20:22, 1:3, 20:22] = 1  # 8: the third largest of label 1
    labels[1:3, 20:22, 1:3] = 2
    labels[3:5, 22:24, 3:5] = 2  # touches the cube above at one corner: one component of 16
    labels[10, 20:23, 10] = 2  # 3
    labels[25, 25, 25] = 2  # 1: the third largest of label 2
    labels[25:27, 10, 25] = 3  # label 3 has two components only: kept whole
    labels[28, 28, 1] = 3
    expected = labels.copy()
    expected[20:22, 1:3, 20:22] = 0
    expected[25, 25, 25] = 0
    np.testing.assert_array_equal(keep_largest_components(labels, 2), expected)


def _ir_folder(tmp_path: Path, **sidecar_changes: object) -> tuple[ModelBundle, Path]:
    model_file = tmp_path / "model.pt"
    model_file.write_bytes(b"checkpoint")
    (tmp_path / "model.xml").write_bytes(b"<net/>")
    (tmp_path / "model.bin").write_bytes(b"weights")
    sha = hashlib.sha256(b"checkpoint").hexdigest()
    record = {"format": CACHE_FORMAT, "mhub_cpu": "0.1.0", "checkpoint_sha256": sha, "ir": "fp32",
              "xml_sha256": hashlib.sha256(b"<net/>").hexdigest(), "bin_sha256": hashlib.sha256(b"weights").hexdigest(),
              "config": {"roi_size": [96, 96, 96], "normalize_mode": "range", "output_classes": 3}, **sidecar_changes}
    (tmp_path / "model.openvino.json").write_text(json.dumps(record))
    return ModelBundle("m", model_file, b"checkpoint", sha, [], None), model_file


def test_ir_beside_model_pt_is_used_only_when_its_sidecar_matches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle, model_file = _ir_folder(tmp_path)
    converted = ir_beside(bundle, model_file, Precision.F32)
    assert converted is not None and converted.xml_path == tmp_path / "model.xml" and converted.ir is IrFormat.FP32
    assert ir_beside(bundle, model_file, Precision.BF16) is not None, "bf16 compute runs the fp32 IR"
    assert ir_beside(bundle, model_file, Precision.INT8) is None
    assert "it is fp32, --precision int8 needs the int8 IR" in capsys.readouterr().err
    (tmp_path / "model.bin").write_bytes(b"other weights")
    assert ir_beside(bundle, model_file, Precision.F32) is None
    assert "model.bin is not the file its sidecar names" in capsys.readouterr().err
    bundle, model_file = _ir_folder(tmp_path, checkpoint_sha256="0" * 64)
    assert ir_beside(bundle, model_file, Precision.F32) is None
    assert "converted from another checkpoint" in capsys.readouterr().err
    (tmp_path / "model.openvino.json").unlink()
    assert ir_beside(bundle, model_file, Precision.F32) is None
    assert "model.xml beside model.pt has no model.openvino.json" in capsys.readouterr().err
