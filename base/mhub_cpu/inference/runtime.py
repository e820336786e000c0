"""OpenVINO execution of a converted network, with the precision always stated explicitly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelError

#: Compute precisions accepted by the CPU plugin's INFERENCE_PRECISION_HINT that we expose.
COMPUTE_PRECISIONS = ("f32", "bf16")


class OpenVinoNetwork:
    """A compiled OpenVINO model that maps one window to its logits.

    OpenVINO picks bf16 by itself on CPUs with AVX-512 BF16 unless told otherwise, so the compute
    precision is always passed as ``INFERENCE_PRECISION_HINT``.
    """

    def __init__(
        self, xml_path: Path, precision: str = "f32", threads: int | None = None,
        window: tuple[int, int, int] | None = None,
    ) -> None:
        """Compile ``xml_path`` for the CPU.

        Args:
            precision: ``f32`` or ``bf16`` compute (INFERENCE_PRECISION_HINT).
            threads: INFERENCE_NUM_THREADS; all cores when ``None``.
            window: Spatial input size to reshape the network to (it is fully convolutional); the
                IR's own static size when ``None``.
        """
        import openvino as ov

        if precision not in COMPUTE_PRECISIONS:
            raise ModelError(f"unknown compute precision {precision!r}; choose one of {', '.join(COMPUTE_PRECISIONS)}")
        core = ov.Core()
        properties: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            properties["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            model = core.read_model(str(xml_path))
            if window is not None:
                batch, channels = (int(d) for d in model.input(0).shape[:2])
                model.reshape([batch, channels, *window])
            self._compiled = core.compile_model(model, "CPU", properties)
        except RuntimeError as exc:
            raise ModelError(f"OpenVINO cannot compile {xml_path}: {exc}") from exc
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
