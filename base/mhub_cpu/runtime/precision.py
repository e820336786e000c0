"""What a run computes in: the precision type, what this CPU can run, and what really ran.

A :class:`Precision` names a run by two things: the IR's weight format (:class:`IrFormat`) and the
compute precision OpenVINO is asked for (:class:`Compute`, ``INFERENCE_PRECISION_HINT``).

OpenVINO's CPU plugin treats ``INFERENCE_PRECISION_HINT`` as a wish: on a CPU without native
bfloat16 (e.g. AMD EPYC with AVX2 only) a ``bf16`` hint silently compiles to f32, and an INT8 IR
may run in f32 where the CPU has no INT8 kernels. So a requested compute precision is checked
against the CPU's capabilities before any work, and after compiling, the precision of every
compute layer is read back from the runtime model (``runtimePrecision``). That, not the request,
is what reports say ran.
"""

from __future__ import annotations

import platform
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from mhub_cpu.core.errors import ModelError


class IrFormat(StrEnum):
    """How the IR stores its weights."""

    FP32 = "fp32"
    FP16 = "fp16"  #: fp16-compressed weights, decompressed to f32 when compiled
    INT8 = "int8"  #: NNCF post-training quantisation; f32 where not quantised


class Compute(StrEnum):
    """The compute precision asked of OpenVINO (``INFERENCE_PRECISION_HINT``)."""

    F32 = "f32"
    BF16 = "bf16"

    @property
    def capability(self) -> str:
        """The OpenVINO CPU capability (``OPTIMIZATION_CAPABILITIES``) this compute precision needs."""
        return {Compute.F32: "FP32", Compute.BF16: "BF16"}[self]


class Precision(StrEnum):
    """What a run is (the ``--precision`` values): an IR weight format and a compute precision."""

    F32 = "f32"  #: fp32 weights and compute (closest to the reference)
    BF16 = "bf16"  #: fp32 weights, bfloat16 compute (CPUs with native bf16 only)
    FP16 = "fp16"  #: fp16-compressed weights, f32 compute
    INT8 = "int8"  #: INT8 where NNCF quantised, f32 compute elsewhere

    @property
    def ir(self) -> IrFormat:
        return {Precision.F32: IrFormat.FP32, Precision.BF16: IrFormat.FP32, Precision.FP16: IrFormat.FP16,
                Precision.INT8: IrFormat.INT8}[self]

    @property
    def compute(self) -> Compute:
        return Compute.BF16 if self is Precision.BF16 else Compute.F32

    def to_json(self) -> dict[str, str]:
        return {"mode": self.value, "ir": self.ir.value, "compute": self.compute.value}


#: Layer types whose runtime precision says what the network computes in.
COMPUTE_LAYERS = ("Convolution", "Deconvolution", "FullyConnected", "MatMul", "GroupConvolution")
#: Runtime precisions that mean a layer runs quantised.
INT8_PRECISIONS = ("u8", "i8")
#: Instruction-set features worth stating when precision is discussed (NumPy's names, lower case).
REPORTED_FLAGS = ("avx2", "avx512f", "avx512vnni", "avx512bf16", "avx512fp16")


@dataclass(frozen=True)
class CpuCapabilities:
    """What OpenVINO says this CPU can compute in, and the CPU's own instruction-set flags."""

    openvino: tuple[str, ...]
    flags: tuple[str, ...] = ()
    model_name: str = ""

    @staticmethod
    @lru_cache(maxsize=1)
    def query() -> CpuCapabilities:
        """The capabilities of the CPU this process runs on (asked once)."""
        import openvino as ov

        core = ov.Core()
        capabilities = tuple(str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        try:
            name = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
        except RuntimeError:
            name = platform.processor()
        return CpuCapabilities(openvino=capabilities, flags=_cpu_flags(), model_name=name)

    def supports(self, compute: Compute) -> bool:
        return compute.capability in self.openvino

    def describe(self) -> str:
        """One line for messages: the CPU, OpenVINO's capabilities and the relevant flags."""
        flags = ", ".join(self.flags) or "none of " + "/".join(REPORTED_FLAGS)
        return f"{self.model_name or 'this CPU'} (OpenVINO capabilities: {', '.join(self.openvino)}; CPU flags: {flags})"

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model_name, "openvino_capabilities": list(self.openvino), "flags": list(self.flags)}


def _cpu_flags() -> tuple[str, ...]:
    """The features the CPU reports to this process (CPUID, as NumPy's runtime dispatch reads it).

    Not ``/proc/cpuinfo``: that describes the host, also where this process runs on another
    (emulated or restricted) CPU model.
    """
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # NumPy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features  # type: ignore[no-redef]
        except ImportError:
            return ()
    present = {name.lower() for name, on in features.items() if on}
    return tuple(flag for flag in REPORTED_FLAGS if flag in present)


def require_compute(compute: Compute, capabilities: CpuCapabilities | None = None) -> None:
    """Refuse a compute precision this CPU cannot run (before any conversion or compilation).

    Raises:
        ModelError: the CPU lacks it (the message says what it supports).
    """
    capabilities = capabilities or CpuCapabilities.query()
    if not capabilities.supports(compute):
        supported = [name.value for name in Compute if capabilities.supports(name)]
        raise ModelError(
            f"{compute} is not supported by this CPU: OpenVINO would silently run f32 instead. "
            f"This CPU supports {', '.join(supported)}: {capabilities.describe()}"
        )


@dataclass(frozen=True)
class RunPrecision:
    """The precision a compiled network runs in, read back from OpenVINO.

    Attributes:
        compute_hint: INFERENCE_PRECISION_HINT as the compiled model reports it (after OpenVINO
            applied what the CPU supports).
        layers: For each compute layer type, how many layers run in each runtime precision,
            e.g. ``{"Convolution": {"u8": 29}, "Deconvolution": {"f32": 3}}``.
    """

    compute_hint: str
    layers: dict[str, dict[str, int]] = field(default_factory=dict)

    @staticmethod
    def of(compiled: Any) -> RunPrecision:
        """Read the precision of an ``openvino.CompiledModel``."""
        hint = _short_type(compiled.get_property("INFERENCE_PRECISION_HINT"))
        counts: Counter[tuple[str, str]] = Counter()
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" not in info or "runtimePrecision" not in info:
                continue
            layer_type = info["layerType"].astype(str)
            if layer_type in COMPUTE_LAYERS:
                counts[(layer_type, info["runtimePrecision"].astype(str).lower())] += 1
        layers: dict[str, dict[str, int]] = {}
        for (layer_type, precision), count in sorted(counts.items()):
            layers.setdefault(layer_type, {})[precision] = count
        return RunPrecision(compute_hint=hint, layers=layers)

    def precisions(self) -> Counter[str]:
        """Number of compute layers per runtime precision."""
        total: Counter[str] = Counter()
        for by_precision in self.layers.values():
            total.update(by_precision)
        return total

    @property
    def int8_layers(self) -> int:
        return sum(count for precision, count in self.precisions().items() if precision in INT8_PRECISIONS)

    def summary(self) -> str:
        """E.g. ``u8 29, f32 3 of 32 compute layers (hint f32)``."""
        counts = self.precisions()
        parts = ", ".join(f"{precision} {count}" for precision, count in counts.most_common())
        return f"{parts} of {sum(counts.values())} compute layers (hint {self.compute_hint})"

    def to_json(self) -> dict[str, Any]:
        return {"compute_hint": self.compute_hint, "layers": self.layers, "summary": self.summary()}


def _short_type(value: Any) -> str:
    """``<Type: 'bfloat16'>`` / ``bf16`` → ``bf16``; OpenVINO's element types by their short names."""
    text = getattr(value, "to_string", lambda: str(value))()
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(text, text)


def verify_ran(ran: RunPrecision, precision: Precision, capabilities: CpuCapabilities | None = None) -> None:
    """Refuse a compiled network that does not run as asked.

    Raises:
        ModelError: the compute hint was not honoured, or an INT8 IR runs no layer in INT8.
    """
    if ran.compute_hint != precision.compute:
        capabilities = capabilities or CpuCapabilities.query()
        raise ModelError(
            f"OpenVINO compiled the network for {ran.compute_hint} although {precision.compute} was requested; "
            f"this CPU: {capabilities.describe()}"
        )
    if precision.ir is IrFormat.INT8 and ran.int8_layers == 0:
        capabilities = capabilities or CpuCapabilities.query()
        raise ModelError(
            f"int8 is not supported by this CPU: OpenVINO runs the quantised network without any INT8 layer "
            f"({ran.summary()}); use --precision f32. This CPU: {capabilities.describe()}"
        )
