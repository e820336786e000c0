"""The precision reported is the precision that ran, on CPUs with and without bf16 / INT8 support."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mhub_cpu.auto3dseg.bundle import load_bundle
from mhub_cpu.convert.auto3dseg import convert_bundle
from mhub_cpu.core.errors import ModelError
from mhub_cpu.runtime.network import Network
from mhub_cpu.runtime.precision import (
    AUTO_ORDER,
    Agreement,
    Compute,
    CpuCapabilities,
    IrFormat,
    Precision,
    RunPrecision,
    choose_precision,
    native_support,
    require_compute,
    verify_ran,
)
from mhub_cpu.segment.model import prepare_network

AVX2_ONLY = CpuCapabilities(openvino=("WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"), flags=("avx2",), model_name="AMD EPYC")
WITH_BF16 = CpuCapabilities(openvino=("BF16", "FP32", "INT8"), flags=("avx2", "avx512f", "avx512vnni", "avx512bf16"), model_name="Xeon")
WITH_VNNI = CpuCapabilities(openvino=("FP32", "INT8"), flags=("avx2", "avx512f", "avx512vnni"), model_name="Xeon")
NO_INT8 = CpuCapabilities(openvino=("FP32",), flags=("avx2",), model_name="old CPU")
PASSES = Agreement(True, "Dice mean 0.998, min 0.991 ≥ 0.99/0.95")
FAILS = Agreement(False, "Dice mean 0.985, min 0.938 < 0.99/0.95")


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


class Measured:
    """A stand-in for verify's recorded agreement: the figures per precision, and which were asked."""

    def __init__(self, **agreements: Agreement) -> None:
        self.agreements = agreements
        self.asked: list[Precision] = []

    def __call__(self, precision: Precision) -> Agreement:
        self.asked.append(precision)
        outcome = self.agreements[precision.value]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_auto_prefers_native_bf16_then_int8_each_only_where_its_agreement_holds() -> None:
    everything = tuple(Precision)
    assert AUTO_ORDER == (Precision.BF16, Precision.INT8)
    measured = Measured(bf16=PASSES, int8=PASSES)
    choice = choose_precision(everything, measured, WITH_BF16)
    assert choice.precision is Precision.BF16 and measured.asked == [Precision.BF16]  # int8 not even measured
    assert choice.reason == "CPU has avx512bf16; agreement with f32: Dice mean 0.998, min 0.991 ≥ 0.99/0.95"
    assert choice.log_line().startswith("precision auto → bf16 (CPU has avx512bf16; agreement with f32: Dice mean 0.998")
    assert choice.to_json() == {"precision": "bf16", "precision_requested": "auto", "precision_reason": choice.reason}

    choice = choose_precision(everything, Measured(bf16=FAILS, int8=PASSES), WITH_BF16)
    assert choice.precision is Precision.INT8 and "INT8 kernels" in choice.reason

    choice = choose_precision(everything, Measured(bf16=FAILS, int8=FAILS), WITH_BF16)
    assert choice.precision is Precision.F32
    assert choice.reason == ("bf16: agreement with f32 Dice mean 0.985, min 0.938 < 0.99/0.95; "
                             "int8: agreement with f32 Dice mean 0.985, min 0.938 < 0.99/0.95")


def test_auto_never_measures_what_the_cpu_does_not_run_natively() -> None:
    measured = Measured(bf16=PASSES, int8=PASSES)
    choice = choose_precision(tuple(Precision), measured, AVX2_ONLY)  # INT8 without VNNI: emulated, not native
    assert choice.precision is Precision.F32 and measured.asked == []
    assert choice.reason == "bf16: not native on this CPU (flags: avx2); int8: not native on this CPU (flags: avx2)"
    measured = Measured(bf16=PASSES, int8=PASSES)
    assert choose_precision(tuple(Precision), measured, WITH_VNNI).precision is Precision.INT8  # int8 where it agrees
    assert measured.asked == [Precision.INT8]
    measured = Measured(bf16=PASSES, int8=PASSES)
    assert choose_precision(tuple(Precision), measured, NO_INT8).precision is Precision.F32 and measured.asked == []
    # bpreg offers no fp16; a precision OpenVINO refuses to compile as asked does not qualify
    refused = Measured(bf16=ModelError("OpenVINO compiled the network for f32 although bf16 was requested"), int8=FAILS)
    choice = choose_precision((Precision.F32, Precision.BF16, Precision.INT8), refused, WITH_BF16)
    assert choice.precision is Precision.F32 and "bf16: OpenVINO compiled the network for f32" in choice.reason


def test_the_default_of_every_command_is_auto_and_convert_stays_f32() -> None:
    from mhub_cpu.cli import build_parser

    parser = build_parser()
    for command in (["segment"], ["bodypart"], ["batch", "segment"], ["batch", "bodypart"]):
        args = parser.parse_args([*command, "--input", "x", "--output", "y"])
        assert args.precision == "auto", command
    from mhub_cpu.cli.options import bodypart_options, inference_settings

    settings = inference_settings(parser.parse_args(["segment", "--input", "x", "--output", "y"]), None)
    assert settings.precision_auto and not settings.precision_reason
    explicit = inference_settings(parser.parse_args(["segment", "--input", "x", "--output", "y", "--precision", "f32"]), None)
    assert explicit.precision is Precision.F32 and not explicit.precision_auto
    assert bodypart_options(parser.parse_args(["bodypart", "--input", "x", "--output", "y"])).precision_auto
    assert parser.parse_args(["convert"]).precision == "f32"  # converts one named precision
    assert parser.parse_args(["bodypart-convert"]).precision == "f32"


def _auto_on_demo(demo_model: Path) -> tuple[Precision, str, dict[Precision, dict]]:
    """``--precision auto`` for the demo model on this CPU, and the agreement records it consulted."""
    from mhub_cpu.segment.job import resolve_precision
    from mhub_cpu.segment.pipeline import InferenceSettings
    from mhub_cpu.segment.verify import recorded_agreement

    bundle = load_bundle(demo_model)
    settings = resolve_precision(bundle, InferenceSettings(precision_auto=True))
    records = {precision: record for precision in AUTO_ORDER if (record := recorded_agreement(bundle, precision)) is not None}
    return settings.precision, settings.precision_reason, records


def test_auto_on_this_cpu_follows_the_agreement_it_recorded(demo_model: Path) -> None:
    """Whatever this CPU is: the first precision it runs natively whose recorded agreement holds, else f32."""
    chosen, reason, records = _auto_on_demo(demo_model)
    capabilities = CpuCapabilities.query()
    print(f"auto on {capabilities.describe()}: {chosen} ({reason})")
    consulted = []
    for precision in AUTO_ORDER:
        if native_support(precision, capabilities) is None:
            assert f"{precision}: not native on this CPU" in reason
            continue
        if precision not in records:  # int8: only from verify's record, never measured by auto itself
            assert precision is Precision.INT8 and "int8: no agreement with f32 recorded on this CPU" in reason, reason
            continue
        record = records[precision]  # bf16: measured and recorded beside the IR by auto itself
        assert record["ok"] == (record["dice_mean"] >= 0.99 and record["dice_min"] >= 0.95), record
        assert f"Dice mean {record['dice_mean']:.3f}, min {record['dice_min']:.3f}" in reason
        consulted.append(precision)
        if record["ok"]:
            break
    assert chosen is (consulted[-1] if consulted and records[consulted[-1]]["ok"] else Precision.F32), (reason, records)


@pytest.mark.emulated
def test_auto_picks_f32_on_the_emulated_avx2_only_cpu(demo_model: Path) -> None:
    """No native bf16 and no VNNI: auto runs f32 and measures nothing."""
    assert os.environ.get("MHUB_CPU_EMULATED") == "avx2-only", "run through make test-emulated-cpu"
    chosen, reason, records = _auto_on_demo(demo_model)
    assert chosen is Precision.F32, reason
    assert reason == "bf16: not native on this CPU (flags: avx2); int8: not native on this CPU (flags: avx2)"
    assert records == {}
