"""``mhub-cpu verify``: a conversion is checked against its checkpoint and the MONAI reference, and fails below the stated agreement."""

from __future__ import annotations

from pathlib import Path

import pytest

from mhub_cpu.auto3dseg.bundle import load_bundle
from mhub_cpu.core.errors import ProcessingError
from mhub_cpu.runtime.precision import Precision
from mhub_cpu.segment import verify

pytestmark = pytest.mark.slow


def test_verify_passes_f32_and_fails_a_precision_below_its_stated_agreement(demo_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """f32 of the demo model agrees with the reference; a requirement no conversion can meet makes verify fail, naming it."""
    monkeypatch.setitem(verify.MIN_AGREEMENT, Precision.FP16, (1.01, 0.98, 0.90))  # argmax agreement above 1: impossible
    with pytest.raises(ProcessingError) as failed:
        verify.verify_model(load_bundle(demo_model), [Precision.F32, Precision.FP16])
    message = str(failed.value)
    assert "does not compute what its checkpoint computes: fp16: window argmax" in message and "need 1.01" in message
    assert "f32:" not in message
    # verify records each precision's agreement with f32 beside its IR, where --precision auto reads it
    from mhub_cpu.convert.ir_cache import agreement_record_path, read_record
    from mhub_cpu.segment.model import prepare_network

    bundle = load_bundle(demo_model)
    recorded = read_record(agreement_record_path(prepare_network(bundle, Precision.FP16).xml_path.parent, "fp16"))
    assert recorded is not None and recorded["ok"] and recorded["dice_mean"] >= verify.AUTO_DICE[0], recorded
    assert recorded["f32_ir"] == prepare_network(bundle, Precision.F32).xml_path.parent.name
    results = verify.verify_model(load_bundle(demo_model), [Precision.F32])
    f32 = results["precisions"]["f32"]
    assert f32["ok"] and f32["window_argmax_agreement"] >= 0.999 and f32["dice_mean"] >= 0.99, f32
