"""``--precision auto`` (the default): the choice follows the agreement with f32 recorded beside each IR, and
the log and the report say what was chosen and why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CT_NIFTI
from mhub_cpu.auto3dseg.bundle import load_bundle
from mhub_cpu.convert.ir_cache import read_record, write_record
from mhub_cpu.core.resources import calibration_images
from mhub_cpu.runtime.precision import CpuCapabilities, Precision
from mhub_cpu.segment.job import resolve_precision
from mhub_cpu.segment.model import prepare_network
from mhub_cpu.segment.pipeline import InferenceSettings
from mhub_cpu.segment.verify import agreement_record
from mhub_cpu_dev.standins.bodypart import random_state_dict, write_model_dir

AVX2_ONLY = CpuCapabilities(openvino=("WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"), flags=("avx2",), model_name="AMD EPYC")
AMX = CpuCapabilities(openvino=("BF16", "FP32", "FP16", "INT8"), flags=("avx2", "avx512f", "avx512vnni", "avx512bf16"), model_name="Xeon")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mhub_cpu.cli", *args], capture_output=True, text=True, timeout=600)


def fake_cpu(monkeypatch: pytest.MonkeyPatch, capabilities: CpuCapabilities) -> None:
    monkeypatch.setattr(CpuCapabilities, "query", staticmethod(lambda: capabilities))


def record_verify(bundle: object, precision: Precision, mean: float, lowest: float) -> Path:
    """Record an agreement as verify would (the figures stand in for a measurement on another CPU)."""
    path, key = agreement_record(prepare_network(bundle, precision), prepare_network(bundle, Precision.F32), precision,  # type: ignore[arg-type]
                                 calibration_images()[0])
    write_record(path, {**key, "precision": precision.value, "dice_mean": mean, "dice_min": lowest,
                        "required": {"dice_mean": 0.99, "dice_min": 0.95}, "ok": mean >= 0.99 and lowest >= 0.95})
    return path


def test_auto_follows_the_recorded_agreement_on_a_cpu_with_native_bf16(demo_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = load_bundle(demo_model)
    fake_cpu(monkeypatch, AMX)
    record_verify(bundle, Precision.BF16, 0.998, 0.991)
    chosen = resolve_precision(bundle, InferenceSettings(precision_auto=True))
    assert chosen.precision is Precision.BF16
    assert chosen.precision_reason == "CPU has avx512bf16; agreement with f32: Dice mean 0.998, min 0.991 ≥ 0.99/0.95"

    record_verify(bundle, Precision.BF16, 0.998, 0.94)  # verify says bf16 loses a structure: not chosen
    record_verify(bundle, Precision.INT8, 0.995, 0.97)
    chosen = resolve_precision(bundle, InferenceSettings(precision_auto=True))
    assert chosen.precision is Precision.INT8, chosen.precision_reason
    assert "Dice mean 0.995, min 0.970 ≥ 0.99/0.95" in chosen.precision_reason

    record_verify(bundle, Precision.INT8, 0.985, 0.938)
    chosen = resolve_precision(bundle, InferenceSettings(precision_auto=True))
    assert chosen.precision is Precision.F32
    assert chosen.precision_reason == ("bf16: agreement with f32 Dice mean 0.998, min 0.940 < 0.99/0.95; "
                                       "int8: agreement with f32 Dice mean 0.985, min 0.938 < 0.99/0.95")
    explicit = InferenceSettings(precision=Precision.F32)
    assert resolve_precision(bundle, explicit) is explicit  # --precision f32: the faithful run, untouched


def test_auto_on_an_avx2_only_cpu_never_picks_bf16(demo_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = load_bundle(demo_model)
    fake_cpu(monkeypatch, AVX2_ONLY)
    record_verify(bundle, Precision.BF16, 1.0, 1.0)  # even a perfect record: the CPU cannot run it natively
    record_verify(bundle, Precision.INT8, 0.985, 0.938)
    chosen = resolve_precision(bundle, InferenceSettings(precision_auto=True))
    assert chosen.precision is Precision.F32
    assert chosen.precision_reason == "bf16: not native on this CPU (flags: avx2); int8: not native on this CPU (flags: avx2)"


def test_a_record_of_another_cpu_is_measured_again(demo_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Agreement depends on the CPU's kernels: a record made elsewhere (an image built on another CPU) is not trusted."""
    from mhub_cpu.segment.verify import agreement_with_f32

    bundle = load_bundle(demo_model)
    fake_cpu(monkeypatch, AMX)
    path = record_verify(bundle, Precision.FP16, 0.5, 0.5)
    monkeypatch.undo()
    measured = agreement_with_f32(bundle, Precision.FP16)  # fp16 weights, f32 compute: every CPU runs it
    assert measured["cpu"] == CpuCapabilities.query().to_json() and measured["dice_mean"] > 0.99, measured
    assert read_record(path) == measured  # the new measurement replaced the foreign record


def test_segment_by_default_logs_and_reports_the_choice_and_its_reason(demo_model: Path, tmp_path: Path) -> None:
    result = run_cli("segment", "--input", str(CT_NIFTI), "--output", str(tmp_path), "--model", str(demo_model))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    said = [i for i, line in enumerate(lines) if line.startswith("[mhub-cpu] precision auto → ")]
    assert len(said) == 1 and said[0] < next(i for i, line in enumerate(lines) if "read input" in line), lines[:12]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["precision_requested"] == "auto"
    assert report["precision"] == report["inference"]["precision"]["mode"] in ("f32", "bf16", "int8")
    assert lines[said[0]] == f"[mhub-cpu] precision auto → {report['precision']} ({report['precision_reason']})"
    assert ("agreement with f32: Dice mean" in report["precision_reason"]) == (report["precision"] != "f32")

    forced = tmp_path / "f32"
    result = run_cli("segment", "--input", str(CT_NIFTI), "--output", str(forced), "--model", str(demo_model), "--precision", "f32")
    assert result.returncode == 0 and "precision auto" not in result.stderr
    report = json.loads((forced / "report.json").read_text())
    assert (report["precision"], report["precision_requested"]) == ("f32", "f32")
    assert report["inference"]["precision"]["compute_hint"] == "f32"


def test_bodypart_auto_follows_the_score_agreement_and_reports_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mhub_cpu.bodypart.modelfiles import resolve_model
    from mhub_cpu.bodypart.pipeline import Options, run
    from mhub_cpu.bodypart.pipeline import agreement_record as bodypart_record
    from mhub_cpu.bodypart.pipeline import resolve_precision as bodypart_auto

    model = resolve_model(str(write_model_dir(tmp_path / "model", random_state_dict(0))))
    result = run(CT_NIFTI, tmp_path / "out", model, Options(precision_auto=True))  # this CPU, measured
    qa = result.qa["model"]
    assert qa["precision_requested"] == "auto" and qa["precision"] == qa["ran"]["mode"] in ("f32", "bf16", "int8")
    if qa["precision"] != "f32":
        path, _ = bodypart_record(model, Precision(qa["precision"]))
        record = read_record(path)
        assert record is not None and record["ok"] and record["max_abs_score_diff"] <= 0.5
        assert f"max score diff {record['max_abs_score_diff']:.3f} ≤ 0.5" in qa["precision_reason"]

    fake_cpu(monkeypatch, AMX)
    for precision, diff in ((Precision.BF16, 0.8), (Precision.INT8, 2.3)):  # bpreg's int8 differs by 2.3 on the benchmark
        path, key = bodypart_record(model, precision)
        path.parent.mkdir(parents=True, exist_ok=True)  # int8: the record sits where the quantised IR would
        assert write_record(path, {**key, "max_abs_score_diff": diff, "ok": diff <= 0.5})
    chosen = bodypart_auto(model, Options(precision_auto=True))
    assert chosen.precision is Precision.F32
    assert chosen.precision_reason == ("bf16: agreement with f32 max score diff 0.800 > 0.5; "
                                       "int8: agreement with f32 max score diff 2.300 > 0.5")
    path, key = bodypart_record(model, Precision.BF16)
    write_record(path, {**key, "max_abs_score_diff": 0.41, "ok": True})
    chosen = bodypart_auto(model, Options(precision_auto=True))
    assert chosen.precision is Precision.BF16 and chosen.precision_reason.endswith("max score diff 0.410 ≤ 0.5")


def test_mhub_workflows_and_runners_default_to_auto() -> None:
    root = Path(__file__).resolve().parents[2] / "models"
    configs = sorted(root.glob("*/config/*.yml"))
    assert configs
    for config in configs:
        precisions = [line.split(":", 1)[1].strip() for line in config.read_text().splitlines() if line.strip().startswith("precision:")]
        assert precisions == ["auto"], config
    for runner in sorted(root.glob("*/utils/*Runner.py")):
        assert "@IO.Config('precision', str, 'auto'," in runner.read_text(), runner
