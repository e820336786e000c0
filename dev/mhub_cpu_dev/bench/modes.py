"""Benchmark modes: the reference and our engine's settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    name: str
    engine: str  # "reference" (MONAI + PyTorch fp32) or "openvino"
    precision: str = "f32"
    strategy: str = "dense"
    overlap: float = 0.625
    skip_air: bool = False
    max_memory_mb: float | None = None

    def describe(self) -> str:
        if self.engine == "reference":
            return "MONAI + PyTorch fp32, Slicer settings (dense, overlap 0.625, gaussian)"
        air = ", skip air" if self.skip_air else ""
        budget = f", --max-memory {self.max_memory_mb:.0f}" if self.max_memory_mb else ""
        return f"OpenVINO {self.precision}, {self.strategy} windows, overlap {self.overlap}{air}{budget}"


MODES = {
    mode.name: mode
    for mode in (
        Mode("reference", "reference"),
        Mode("ov-f32", "openvino", "f32"),
        Mode("ov-bf16", "openvino", "bf16"),
        Mode("ov-int8", "openvino", "int8"),
        Mode("ov-f32-o0.5", "openvino", "f32", "dense", 0.5),
        Mode("ov-f32-o0.375", "openvino", "f32", "dense", 0.375),
        Mode("ov-f32-sparse", "openvino", "f32", "sparse", 0.25, True),
        Mode("ov-bf16-sparse", "openvino", "bf16", "sparse", 0.25, True),
        Mode("ov-int8-sparse", "openvino", "int8", "sparse", 0.25, True),
        Mode("ov-f32-sparse-2.5g", "openvino", "f32", "sparse", 0.25, True, 2500),
        Mode("ov-int8-sparse-2.5g", "openvino", "int8", "sparse", 0.25, True, 2500),
        Mode("ov-int8-sparse-4g", "openvino", "int8", "sparse", 0.25, True, 4000),
        Mode("ov-f32-sparse-4g", "openvino", "f32", "sparse", 0.25, True, 4000),
        Mode("ov-f32-6g", "openvino", "f32", "dense", 0.625, False, 6000),
        Mode("ov-int8-6g", "openvino", "int8", "dense", 0.625, False, 6000),
        Mode("ov-f32-800m", "openvino", "f32", "dense", 0.625, False, 800),
        Mode("ov-int8-800m", "openvino", "int8", "dense", 0.625, False, 800),
    )
}

#: Modes run per workload by default (W3's reference cannot fit in memory; see runner; bf16 modes
#: are recorded as not run on CPUs without native bf16). On D, the
#: dense overlap sweep (0.625, 0.5, 0.375) is what the default overlap is chosen from, and the
#: ``-800m`` modes measure what windows shrunk for ``--max-memory`` cost in agreement (D's grid
#: fits 2.5 GB with the model's window). ``-6g`` are the settings of ``models/wholebody_openvino``'s
#: workflows (Slicer's placement, ``max_memory: 6000``; f32, and int8 as the faster option), run on
#: the whole-body workloads: without a budget, 118 classes need an estimated 13-15 GB at the model's window
#: (W3's ``ov-f32-6g`` is left out of the default plan: 20-29 minutes on 2 cores). ``-sparse-4g`` are what a
#: user short of memory would pick on W3, INT8 and f32.
DEFAULT_PLAN = {
    "W1": ["reference", "ov-f32", "ov-bf16", "ov-int8", "ov-f32-sparse", "ov-bf16-sparse", "ov-int8-sparse",
           "ov-f32-sparse-2.5g", "ov-int8-sparse-2.5g"],
    "W2": ["reference", "ov-f32", "ov-f32-sparse", "ov-int8-sparse"],
    "W3": ["reference", "ov-int8-sparse-4g", "ov-f32-sparse-4g", "ov-int8-6g"],
    "W4": ["reference", "ov-f32-6g", "ov-int8-6g"],
    "D": ["reference", "ov-f32", "ov-bf16", "ov-int8", "ov-f32-o0.5", "ov-f32-o0.375", "ov-f32-sparse", "ov-int8-sparse",
          "ov-f32-800m", "ov-int8-800m"],
}
