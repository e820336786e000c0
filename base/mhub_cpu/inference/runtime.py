"""OpenVINO execution of a converted network, with the precision stated explicitly and read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .precision import RunPrecision, require_compute, verify_ran


def compile_for_cpu(
    xml_path: Path, compute: str = "f32", threads: int | None = None, int8: bool = False,
    window: tuple[int, ...] | None = None,
) -> tuple[Any, RunPrecision]:
    """Compile an IR for the CPU and check that it runs in the precision asked for.

    OpenVINO picks bf16 by itself on CPUs with native bf16 unless told otherwise, and drops a bf16
    hint on CPUs without it, so the compute precision is always passed as
    ``INFERENCE_PRECISION_HINT`` and what was compiled is read back (:class:`RunPrecision`).

    Args:
        compute: ``f32`` or ``bf16`` compute; refused before compiling if this CPU lacks it.
        threads: INFERENCE_NUM_THREADS; all cores when ``None``.
        int8: The IR is quantised: at least one layer must run in INT8, else refused.
        window: Spatial input size to reshape the (fully convolutional) network to, batch and
            channels kept; the IR's own size when ``None``.

    Returns:
        The ``openvino.CompiledModel`` and the precision it runs in.

    Raises:
        ModelError: the IR cannot be compiled, or would not run in the requested precision.
    """
    import openvino as ov

    require_compute(compute)
    core = ov.Core()
    properties: dict[str, object] = {"INFERENCE_PRECISION_HINT": compute, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        properties["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        model = core.read_model(str(xml_path))
        if window is not None:
            batch, channels = (int(d) for d in model.input(0).shape[:2])
            model.reshape([batch, channels, *window])
        compiled = core.compile_model(model, "CPU", properties)
    except RuntimeError as exc:
        raise ModelError(f"OpenVINO cannot compile {xml_path}: {exc}") from exc
    ran = RunPrecision.of(compiled)
    verify_ran(ran, compute, int8)
    return compiled, ran


class OpenVinoNetwork:
    """A compiled OpenVINO model that maps one window to its logits."""

    def __init__(
        self, xml_path: Path, precision: str = "f32", threads: int | None = None,
        window: tuple[int, int, int] | None = None, int8: bool = False,
    ) -> None:
        """Compile ``xml_path`` for the CPU (see :func:`compile_for_cpu`).

        Args:
            precision: ``f32`` or ``bf16`` compute (INFERENCE_PRECISION_HINT).
            threads: INFERENCE_NUM_THREADS; all cores when ``None``.
            window: Spatial input size to reshape the network to (it is fully convolutional); the
                IR's own static size when ``None``.
            int8: The IR is INT8-quantised.
        """
        self._compiled, self.ran = compile_for_cpu(xml_path, precision, threads, int8, window)
        self._request = self._compiled.create_infer_request()
        self.input_shape = tuple(int(d) for d in self._compiled.input(0).shape)
        self.precision = precision

    def __call__(self, window: np.ndarray) -> np.ndarray:
        """Logits (classes × roi) of one single-channel window (roi-shaped float32).

        The array is OpenVINO's own output buffer (no copy): valid, and writable, until the next call.
        """
        batch = window.reshape(self.input_shape).astype(np.float32, copy=False)
        result = self._request.infer({0: batch}, share_inputs=True, share_outputs=True)
        return np.asarray(result[0])[0]
