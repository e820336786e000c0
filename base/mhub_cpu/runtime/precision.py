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
from collections.abc import Callable
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


#: The ``--precision`` value that lets the engine choose (the default of every command).
AUTO = "auto"
#: What ``auto`` tries, fastest first; f32 when none qualifies. bf16 before int8: on the benchmark's
#: AMX Xeon the demo model ran 4.5 s in bf16 at Dice 0.998 / 0.9915 against 5.5 s in int8 at
#: 0.985 / 0.938, and bpreg's int8 (2.8 s) was faster than bf16 (3.7 s) but differed by 2.3 score
#: points against 0.41: bf16 is faster where it matters and never less faithful.
AUTO_ORDER = (Precision.BF16, Precision.INT8)


@dataclass(frozen=True)
class Agreement:
    """How closely one precision's output agrees with f32 on the engine's calibration CT.

    Attributes:
        ok: the figures hold against the stated thresholds.
        figures: the figures and thresholds in words, e.g. ``Dice mean 0.998, min 0.991 ≥ 0.99/0.95``.
    """

    ok: bool
    figures: str


@dataclass(frozen=True)
class AutoChoice:
    """What ``--precision auto`` chose and why (for the log's first lines and the report)."""

    precision: Precision
    reason: str

    def log_line(self) -> str:
        return f"precision auto → {self.precision} ({self.reason})"

    def to_json(self) -> dict[str, str]:
        return {"precision": self.precision.value, "precision_requested": AUTO, "precision_reason": self.reason}


def native_support(precision: Precision, capabilities: CpuCapabilities) -> str | None:
    """Why this CPU runs ``precision`` natively (``None``: it does not, so ``auto`` skips it)."""
    if precision.compute is Compute.BF16:
        if not capabilities.supports(Compute.BF16):
            return None
        return "CPU has avx512bf16" if "avx512bf16" in capabilities.flags else "CPU has native bf16 (AMX)"
    if precision.ir is IrFormat.INT8:
        # Without VNNI (AVX2 only) OpenVINO still runs INT8, emulated with wider instructions: no faster
        # than f32 on the benchmark's networks, and less faithful, so auto does not consider it there.
        if "INT8" not in capabilities.openvino or "avx512vnni" not in capabilities.flags:
            return None
        return "CPU has VNNI INT8 kernels"
    return "f32 runs on every CPU"


def choose_precision(
    offered: tuple[Precision, ...], agreement: Callable[[Precision], Agreement], capabilities: CpuCapabilities | None = None,
) -> AutoChoice:
    """``--precision auto``: the first of :data:`AUTO_ORDER` (among ``offered``) this CPU runs natively
    and whose ``agreement`` with f32 holds, else f32.

    ``agreement`` is asked only for the precisions the CPU runs natively, in order, until one holds;
    a precision OpenVINO refuses to compile as asked (:class:`ModelError`) does not qualify.
    """
    capabilities = capabilities or CpuCapabilities.query()
    passed_over = []
    for precision in AUTO_ORDER:
        if precision not in offered:
            continue
        native = native_support(precision, capabilities)
        if native is None:
            flags = ", ".join(capabilities.flags) or "none of " + "/".join(REPORTED_FLAGS)
            passed_over.append(f"{precision}: not native on this CPU (flags: {flags})")
            continue
        try:
            measured = agreement(precision)
        except ModelError as exc:
            passed_over.append(f"{precision}: {exc}")
            continue
        if measured.ok:
            return AutoChoice(precision, f"{native}; agreement with f32: {measured.figures}")
        passed_over.append(f"{precision}: agreement with f32 {measured.figures}")
    return AutoChoice(Precision.F32, "; ".join(passed_over) or "f32 is the only precision offered")
