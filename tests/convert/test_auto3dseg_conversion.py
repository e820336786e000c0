"""Auto3DSeg checkpoint → OpenVINO IR: the IR computes what the checkpoint computes, models it cannot run are refused."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mhub_cpu.auto3dseg.bundle import load_bundle
from mhub_cpu.convert.auto3dseg import check_supported, convert_bundle, network_from_config
from mhub_cpu.convert.checkpoint import load_checkpoint
from mhub_cpu.core.errors import ModelError
from mhub_cpu.runtime.network import Network
from mhub_cpu.runtime.precision import CpuCapabilities, IrFormat, Precision


@pytest.mark.parametrize("precision", [Precision.F32, Precision.BF16, Precision.FP16])
def test_conversion_and_precision_modes(demo_model: Path, precision: Precision) -> None:
    """Each precision's IR computes the checkpoint's logits (within its precision's tolerance), or is refused."""
    import torch


    bundle = load_bundle(demo_model)
    converted = convert_bundle(bundle, precision.ir)
    assert converted.xml_path.exists() and converted.ir is precision.ir
    assert convert_bundle(bundle, precision.ir).xml_path == converted.xml_path, "cached"
    if not CpuCapabilities.query().supports(precision.compute):  # e.g. bf16 on an AVX2-only CPU
        with pytest.raises(ModelError, match=f"{precision.compute} is not supported by this CPU"):
            Network(converted.xml_path, precision, threads=2)
        return
    network = Network(converted.xml_path, precision, threads=2)
    assert network.ran.compute_hint == precision.compute
    if precision.ir is IrFormat.FP32:  # fp16 weights may show as f16 layers (weights read in f16) on CPUs with FP16
        assert network.ran.precisions().keys() == {precision.compute}, network.ran.layers
    rng = np.random.default_rng(0)
    window = rng.uniform(0, 1, size=converted.config["roi_size"]).astype(np.float32)
    ours = network(window[None, None])[0]
    config, state = load_checkpoint(bundle.checkpoint_bytes)
    torch_net = network_from_config(config)
    torch_net.load_state_dict(state)
    torch_net.eval()
    with torch.no_grad():
        expected = torch_net(torch.from_numpy(window)[None, None])
        expected = (expected[0] if isinstance(expected, list) else expected)[0].numpy()
    scale = np.abs(expected).max()
    tolerance = 1e-3 if precision is Precision.F32 else 0.1
    assert np.abs(ours - expected).max() / scale < tolerance
    assert (ours.argmax(0) == expected.argmax(0)).mean() > (0.999 if tolerance < 0.01 else 0.97)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sigmoid": True}, "sigmoid .multi-label. models are not supported"),
        ({"input_channels": 2}, "2 input channels are not supported"),
        ({"extra_modalities": {"t2": "image2"}}, "multi-input models"),
    ],
)
def test_unsupported_models_are_refused_before_the_input_is_read(
    demo_model: Path, tmp_path: Path, change: dict, message: str,
) -> None:
    """The model is converted and checked before the input is read: a folder without DICOM is not even scanned."""
    import torch

    from mhub_cpu.cli import main

    with zipfile.ZipFile(demo_model) as source:
        names = source.namelist()
        checkpoint = torch.load(io.BytesIO(source.read(next(n for n in names if n.endswith("model.pt")))), weights_only=True)
        labels_name = next(n for n in names if n.endswith("labels.csv"))
        labels = source.read(labels_name)
    checkpoint["config"].update(change)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    model = tmp_path / "unsupported-v0.0.1.zip"
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr("model/labels.csv", labels)
        archive.writestr("model/model.pt", buffer.getvalue())
    with pytest.raises(ModelError, match=message):
        check_supported(checkpoint["config"])
    not_dicom = tmp_path / "not-dicom"
    not_dicom.mkdir()
    (not_dicom / "notes.txt").write_text("no DICOM here")
    code = main(["segment", "--input", str(not_dicom), "--output", str(tmp_path / "out"), "--model", str(model)])
    assert code == 3  # ModelError, not the InputError (2) of a folder without DICOM
    assert not any((tmp_path / "out").iterdir())
