"""An OpenVINO IR compiled for the CPU, with its precision stated explicitly and read back."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from mhub_cpu.core.errors import ModelError
from mhub_cpu.runtime.head import ClassHead, split_class_head
from mhub_cpu.runtime.precision import Precision, RunPrecision, require_compute, verify_ran

#: Compiled networks kept for reuse, by IR files (path, sizes, mtimes) and settings; oldest first.
_kept: OrderedDict[tuple, tuple[Any, RunPrecision, ClassHead | None]] = OrderedDict()
_keep = 0
_kept_lock = threading.Lock()


def keep_compiled(count: int) -> None:
    """Keep the last ``count`` compiled networks of this process for reuse (default 0: none).

    A batch worker runs one job over many series: compiling its network once instead of once per
    series saves seconds per series. Kept networks stay in memory, so a command that runs once
    (whose memory budget counts on the network being freed after inference) keeps none.
    """
    global _keep
    with _kept_lock:
        _keep = count
        while len(_kept) > _keep:
            _kept.popitem(last=False)


def compile_for_cpu(
    xml_path: Path, precision: Precision, threads: int | None = None, input_shape: tuple[int, ...] | None = None,
    split_head: bool = False,
) -> tuple[Any, RunPrecision, ClassHead | None]:
    """Compile an IR for the CPU and check that it runs in the precision asked for (or reuse one
    compiled from the same files with the same settings, see :func:`keep_compiled`).

    OpenVINO picks bf16 by itself on CPUs with native bf16 unless told otherwise, and drops a bf16
    hint on CPUs without it, so the compute precision is always passed as
    ``INFERENCE_PRECISION_HINT`` and what was compiled is read back (:class:`RunPrecision`).

    Args:
        precision: The run's precision; its compute part is refused before compiling if this CPU
            lacks it, and an INT8 IR must run at least one layer in INT8.
        threads: INFERENCE_NUM_THREADS; all cores when ``None``.
        input_shape: Shape to reshape the network's input to (e.g. another window size of a fully
            convolutional network); the IR's own shape when ``None``.
        split_head: Compile the network without its final 1×1×1 class convolution, where it has
            one (:func:`~mhub_cpu.runtime.head.split_class_head`): it then outputs feature maps.

    Returns:
        The ``openvino.CompiledModel``, the precision it runs in, and the class head split off
        (``None``: not asked for, or the network has no head that can be split off).

    Raises:
        ModelError: the IR cannot be compiled, or would not run in the requested precision.
    """
    require_compute(precision.compute)
    files = _files_key(Path(xml_path)) if _keep else None
    if files is None:
        return _compile(xml_path, precision, threads, input_shape, split_head)
    key = (files, precision, threads, input_shape, split_head)
    with _kept_lock:
        if key in _kept:
            _kept.move_to_end(key)
            return _kept[key]
        compiled = _compile(xml_path, precision, threads, input_shape, split_head)
        _kept[key] = compiled
        while len(_kept) > _keep:
            _kept.popitem(last=False)
        return compiled


def _files_key(xml_path: Path) -> tuple | None:
    """What identifies an IR on disk: its path and its two files' sizes and mtimes (None if absent:
    compiling then says what is wrong)."""
    try:
        files = [path.stat() for path in (xml_path, xml_path.with_suffix(".bin"))]
    except OSError:
        return None
    return (str(xml_path.resolve()), *((f.st_size, f.st_mtime_ns) for f in files))


def _compile(
    xml_path: Path, precision: Precision, threads: int | None, input_shape: tuple[int, ...] | None, split_head: bool,
) -> tuple[Any, RunPrecision, ClassHead | None]:
    import openvino as ov

    core = ov.Core()
    properties: dict[str, object] = {"INFERENCE_PRECISION_HINT": precision.compute.value, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        properties["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        model = core.read_model(str(xml_path))
        if input_shape is not None:
            model.reshape(list(input_shape))
        split = split_class_head(model) if split_head else None
        compiled = core.compile_model(split[0] if split else model, "CPU", properties)
    except RuntimeError as exc:
        raise ModelError(f"OpenVINO cannot compile {xml_path}: {exc}") from exc
    ran = RunPrecision.of(compiled)
    verify_ran(ran, precision)
    return compiled, ran, split[1] if split else None


class Network:
    """A compiled single-input network: ``network(batch)`` returns its first output.

    Attributes:
        ran: The precision every compute layer runs in (read back from OpenVINO).
        precision: The precision asked for.
        input_shape: The compiled input shape (``-1`` where dynamic).
        head: With ``split_head``, the class head split off (the output is then the feature maps
            it takes); ``None`` otherwise.
    """

    def __init__(
        self, xml_path: Path, precision: Precision, threads: int | None = None,
        input_shape: tuple[int, ...] | None = None, split_head: bool = False,
    ) -> None:
        """Compile ``xml_path`` for the CPU (see :func:`compile_for_cpu`)."""
        self.precision = precision
        self._compiled, self.ran, self.head = compile_for_cpu(xml_path, precision, threads, input_shape, split_head)
        self._request = self._compiled.create_infer_request()
        self.input_shape = tuple(d.get_length() if d.is_static else -1 for d in self._compiled.input(0).get_partial_shape())

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The first output for one input batch (float32).

        The array is OpenVINO's own output buffer (no copy): valid, and writable, until the next call.
        """
        inputs = np.ascontiguousarray(batch, dtype=np.float32)
        result = self._request.infer({0: inputs}, share_inputs=True, share_outputs=True)
        return np.asarray(result[0])
