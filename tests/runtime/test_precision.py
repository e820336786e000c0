"""The precision reported is the precision that ran, on CPUs with and without bf16 / INT8 support."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mhub_cpu.auto3dseg.bundle import load_bundle
from mhub_cpu.convert.auto3dseg import convert_bundle
from mhub_cpu.core.errors import ModelError
from mhub_cpu.runtime.network import Network
from mhub_cpu.runtime.precision import Compute, CpuCapabilities, IrFormat, Precision, RunPrecision, require_compute, verify_ran
from mhub_cpu.segment.model import prepare_network

AVX2_ONLY = CpuCapabilities(openvino=("WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"), flags=("avx2",), model_name="AMD EPYC")
WITH_BF16 = CpuCapabilities(openvino=("BF16", "FP32", "INT8"), flags=("avx2", "avx512f", "avx512bf16"), model_name="Xeon")


def test_capabilities_of_this_cpu_are_consistent_with_its_flags() -> None:
    capabilities = CpuCapabilities.query()
    print(f"this CPU: {capabilities.describe()}")
    assert "FP32" in capabilities.openvino
    if "avx512bf16" in capabilities.flags:
        assert capabilities.supports(Compute.BF16), "native bf16 in the CPU's features but OpenVINO offers no BF16"


def test_bf16_runs_in_bf16_where_supported_and_is_refused_elsewhere(demo_model: Path) -> None:
    xml = convert_bundle(load_bundle(demo_model), IrFormat.FP32).xml_path
    if CpuCapabilities.query().supports(Compute.BF16):
        network = Network(xml, Precision.BF16, threads=2)
        assert network.ran.compute_hint == "bf16"
        assert network.ran.precisions().keys() == {"bf16"}, network.ran.layers
    else:
        with pytest.raises(ModelError, match="bf16 is not supported by this CPU.*supports f32"):
            Network(xml, Precision.BF16, threads=2)


def test_f32_runs_in_f32_on_every_cpu(demo_model: Path) -> None:
    network = Network(convert_bundle(load_bundle(demo_model), IrFormat.FP32).xml_path, Precision.F32, threads=2)
    assert network.ran.compute_hint == "f32" and network.ran.precisions().keys() == {"f32"}
    assert network.ran.precisions()["f32"] == sum(network.ran.precisions().values()) > 0


def test_refusal_on_a_cpu_without_bf16_says_what_it_supports(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ModelError) as refused:
        require_compute(Compute.BF16, AVX2_ONLY)
    message = str(refused.value)
    assert "bf16 is not supported by this CPU" in message and "supports f32" in message and "AMD EPYC" in message
    require_compute(Compute.BF16, WITH_BF16)
    require_compute(Compute.F32, AVX2_ONLY)
    from mhub_cpu.cli import build_parser

    for command, choices in (("segment", "'f32', 'bf16', 'fp16', 'int8'"), ("bodypart", "'f32', 'bf16', 'int8'")):
        with pytest.raises(SystemExit) as refused:
            build_parser().parse_args([command, "--input", "x", "--output", "y", "--precision", "fp8"])
        assert refused.value.code == 2
        assert choices in capsys.readouterr().err, command


def test_each_precision_names_its_ir_format_and_compute() -> None:
    """One type says what a run is: the IR's weights and what OpenVINO computes in."""
    table = {p.value: (p.ir.value, p.compute.value) for p in Precision}
    assert table == {"f32": ("fp32", "f32"), "bf16": ("fp32", "bf16"), "fp16": ("fp16", "f32"), "int8": ("int8", "f32")}
    assert Precision.INT8.to_json() == {"mode": "int8", "ir": "int8", "compute": "f32"}


def test_a_dropped_hint_or_an_int8_ir_without_int8_layers_is_refused() -> None:
    dropped = RunPrecision(compute_hint="f32", layers={"Convolution": {"f32": 29}})
    with pytest.raises(ModelError, match="compiled the network for f32 although bf16 was requested"):
        verify_ran(dropped, Precision.BF16, capabilities=AVX2_ONLY)
    with pytest.raises(ModelError, match="int8 is not supported by this CPU"):
        verify_ran(dropped, Precision.INT8, capabilities=AVX2_ONLY)
    quantised = RunPrecision(compute_hint="f32", layers={"Convolution": {"u8": 29}, "Deconvolution": {"f32": 3}})
    verify_ran(quantised, Precision.INT8, capabilities=AVX2_ONLY)
    assert quantised.int8_layers == 29
    assert quantised.summary() == "u8 29, f32 3 of 32 compute layers (hint f32)"


def test_int8_runs_int8_layers_or_is_refused(demo_model: Path) -> None:
    """INT8 runs quantised convolutions on CPUs with INT8 kernels (VNNI or not), else it is refused."""
    converted = prepare_network(load_bundle(demo_model), Precision.INT8)
    if "INT8" in CpuCapabilities.query().openvino:
        network = Network(converted.xml_path, Precision.INT8, threads=2)
        assert network.ran.int8_layers > 0, network.ran.layers
        assert set(network.ran.precisions()) <= {"u8", "i8", "f32"}
    else:
        with pytest.raises(ModelError, match="int8 is not supported by this CPU"):
            Network(converted.xml_path, Precision.INT8, threads=2)


@pytest.mark.emulated
def test_the_emulated_cpu_is_what_it_claims() -> None:
    """Run by ``make test-emulated-cpu`` only (QEMU, an AVX2-only AMD EPYC): no AVX-512, no native bf16,
    so that the other tests of this file take their branches for such a CPU."""
    capabilities = CpuCapabilities.query()
    assert os.environ.get("MHUB_CPU_EMULATED") == "avx2-only", "run through make test-emulated-cpu"
    assert "avx2" in capabilities.flags and "avx512f" not in capabilities.flags
    assert not capabilities.supports(Compute.BF16), capabilities.describe()
