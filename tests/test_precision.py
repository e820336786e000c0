"""The precision reported is the precision that ran, on CPUs with and without bf16 / INT8 support."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mhub_cpu.auto3dseg.bundle import load_bundle
from mhub_cpu.conversion import convert_bundle
from mhub_cpu.errors import ModelError
from mhub_cpu.inference.precision import CpuCapabilities, RunPrecision, require_compute, verify_ran
from mhub_cpu.inference.runtime import OpenVinoNetwork

AVX2_ONLY = CpuCapabilities(openvino=("WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"), flags=("avx2",), model_name="AMD EPYC")
WITH_BF16 = CpuCapabilities(openvino=("BF16", "FP32", "INT8"), flags=("avx2", "avx512f", "avx512bf16"), model_name="Xeon")


def test_capabilities_of_this_cpu_are_consistent_with_its_flags() -> None:
    capabilities = CpuCapabilities.query()
    print(f"this CPU: {capabilities.describe()}")
    assert "FP32" in capabilities.openvino
    if "avx512bf16" in capabilities.flags:
        assert capabilities.supports("bf16"), "native bf16 in the CPU's features but OpenVINO offers no BF16"


def test_bf16_runs_in_bf16_where_supported_and_is_refused_elsewhere(demo_model: Path) -> None:
    xml = convert_bundle(load_bundle(demo_model), "fp32").xml_path
    if CpuCapabilities.query().supports("bf16"):
        network = OpenVinoNetwork(xml, "bf16", threads=2)
        assert network.ran.compute_hint == "bf16"
        assert network.ran.precisions().keys() == {"bf16"}, network.ran.layers
    else:
        with pytest.raises(ModelError, match="bf16 is not supported by this CPU.*supports f32"):
            OpenVinoNetwork(xml, "bf16", threads=2)


def test_f32_runs_in_f32_on_every_cpu(demo_model: Path) -> None:
    network = OpenVinoNetwork(convert_bundle(load_bundle(demo_model), "fp32").xml_path, "f32", threads=2)
    assert network.ran.compute_hint == "f32" and network.ran.precisions().keys() == {"f32"}
    assert network.ran.precisions()["f32"] == sum(network.ran.precisions().values()) > 0


def test_refusal_on_a_cpu_without_bf16_says_what_it_supports() -> None:
    with pytest.raises(ModelError) as refused:
        require_compute("bf16", AVX2_ONLY)
    message = str(refused.value)
    assert "bf16 is not supported by this CPU" in message and "supports f32" in message and "AMD EPYC" in message
    require_compute("bf16", WITH_BF16)
    require_compute("f32", AVX2_ONLY)
    with pytest.raises(ModelError, match="unknown compute precision"):
        require_compute("fp8", WITH_BF16)


def test_a_dropped_hint_or_an_int8_ir_without_int8_layers_is_refused() -> None:
    dropped = RunPrecision(compute_hint="f32", layers={"Convolution": {"f32": 29}})
    with pytest.raises(ModelError, match="compiled the network for f32 although bf16 was requested"):
        verify_ran(dropped, "bf16", int8=False, capabilities=AVX2_ONLY)
    with pytest.raises(ModelError, match="int8 is not supported by this CPU"):
        verify_ran(dropped, "f32", int8=True, capabilities=AVX2_ONLY)
    quantised = RunPrecision(compute_hint="f32", layers={"Convolution": {"u8": 29}, "Deconvolution": {"f32": 3}})
    verify_ran(quantised, "f32", int8=True, capabilities=AVX2_ONLY)
    assert quantised.int8_layers == 29
    assert quantised.summary() == "u8 29, f32 3 of 32 compute layers (hint f32)"


def test_int8_runs_int8_layers_or_is_refused(demo_model: Path) -> None:
    """INT8 runs quantised convolutions on CPUs with INT8 kernels (VNNI or not), else it is refused."""
    from mhub_cpu.segment import prepare_network

    converted = prepare_network(load_bundle(demo_model), "int8")
    if "INT8" in CpuCapabilities.query().openvino:
        network = OpenVinoNetwork(converted.xml_path, "f32", threads=2, int8=True)
        assert network.ran.int8_layers > 0, network.ran.layers
        assert set(network.ran.precisions()) <= {"u8", "i8", "f32"}
    else:
        with pytest.raises(ModelError, match="int8 is not supported by this CPU"):
            OpenVinoNetwork(converted.xml_path, "f32", threads=2, int8=True)


@pytest.mark.emulated
def test_the_emulated_cpu_is_what_it_claims() -> None:
    """Run by ``make test-emulated-cpu`` only (QEMU, an AVX2-only AMD EPYC): no AVX-512, no native bf16,
    so that the other tests of this file take their branches for such a CPU."""
    capabilities = CpuCapabilities.query()
    assert os.environ.get("MHUB_CPU_EMULATED") == "avx2-only", "run through make test-emulated-cpu"
    assert "avx2" in capabilities.flags and "avx512f" not in capabilities.flags
    assert not capabilities.supports("bf16"), capabilities.describe()
