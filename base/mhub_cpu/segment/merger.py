"""Slab-wise (memory-bounded) stitching of weighted window logits into a label map.

The label of a voxel is the argmax of the weighted sum of the logits of every window covering it,
which equals MONAI's argmax of the softmax of the normalised sum, because the weight sum is
positive and shared by all classes. Stitching never holds the classes × volume buffer: windows
arrive in order of their start along the last axis (the slab axis), and as soon as the next
window starts further along that axis, the planes before it can receive no more contributions
and are reduced to labels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mhub_cpu.runtime.head import ClassHead


class SlabStitcher:
    """Accumulates weighted window logits and finalises label planes along the last axis.

    Holds a buffer of ``classes × X × Y × roi_z`` floats covering the planes that windows not yet
    processed may still touch. A window arrives as logits, or as feature maps with the network's
    class head (:class:`~mhub_cpu.runtime.head.ClassHead`), applied here in chunks. Windows must arrive with non-decreasing start along the last axis.
    Every step works on ``workers`` slices along X in parallel threads (NumPy releases the GIL;
    the network is idle meanwhile), and none copies the buffer as a whole.
    """

    def __init__(
        self, shape: tuple[int, int, int], roi: tuple[int, int, int], classes: int, weights: np.ndarray,
        workers: int | None = None,
    ):
        self.shape = shape
        self.roi = roi
        self.weights = weights
        self.labels = np.zeros(shape, dtype=np.uint8 if classes <= 256 else np.uint16)
        self._buffer = np.zeros((classes, shape[0], shape[1], roi[2]), dtype=np.float32)
        self._z0 = 0  # first plane held in the buffer
        self._workers = max(1, workers or os.cpu_count() or 1)

    def add(self, start: tuple[int, int, int], output: np.ndarray, head: ClassHead | None = None) -> None:
        """Add one window placed at ``start``: its logits (classes × roi, float32, overwritten), or
        with ``head`` its feature maps (features × roi), whose logits are then computed a chunk of
        rows at a time straight into the buffer, so that the window's logits never exist in full."""
        x, y, z = start
        if z < self._z0:
            raise ValueError("windows must arrive in non-decreasing order along the last axis")
        self._advance_to(z)
        rx, ry, rz = self.roi
        offset = z - self._z0
        target = self._buffer[:, x : x + rx, y : y + ry, offset : offset + rz]

        def accumulate(part: slice) -> None:
            chunk = output[:, part]
            chunk *= self.weights[part]  # in place: no second classes × window temporary
            target[:, part] += chunk

        def accumulate_from_features(part: slice) -> None:
            assert head is not None
            rows = head.rows_per_chunk(ry * rz)
            for row in range(part.start, part.stop, rows):
                block = slice(row, min(row + rows, part.stop))
                logits = head(output[:, block])
                logits *= self.weights[block]
                target[:, block] += logits

        self._in_parallel(accumulate if head is None else accumulate_from_features, rx)

    def _advance_to(self, z: int) -> None:
        """Finalise planes [z0, z) and slide the buffer so that it starts at plane ``z``."""
        step = z - self._z0
        if step <= 0:
            return
        done = min(step, self._buffer.shape[3])
        self._finalise(done)
        kept = self._buffer.shape[3] - done

        def slide(part: slice) -> None:
            for channel in self._buffer[:, part]:  # overlapping copy: NumPy buffers it, so one class at a time
                channel[..., :kept] = channel[..., done:]
                channel[..., kept:] = 0

        self._in_parallel(slide, self.shape[0])
        self._z0 = z

    def _finalise(self, planes: int) -> None:
        """Labels of the first ``planes`` buffered planes: ``argmax`` over classes, one class at a time.

        Same result as ``np.argmax(buffer[..., :planes], axis=0)`` (first maximum wins), without
        the contiguous classes × planes copy NumPy makes for a reduction over the first axis.
        """
        z0 = self._z0

        def reduce(part: slice) -> None:
            best = self._buffer[0, part, :, :planes].copy()
            labels = self.labels[part, :, z0 : z0 + planes]
            labels[...] = 0
            for index in range(1, self._buffer.shape[0]):
                scores = self._buffer[index, part, :, :planes]
                labels[scores > best] = index
                np.maximum(best, scores, out=best)

        self._in_parallel(reduce, self.shape[0])

    def _in_parallel(self, work: Callable[[slice], None], extent: int) -> None:
        """Run ``work`` on up to ``workers`` contiguous slices of ``range(extent)``, in threads."""
        bounds = np.linspace(0, extent, min(self._workers, extent) + 1).astype(int)
        parts = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        if len(parts) == 1:
            work(parts[0])
            return
        with ThreadPoolExecutor(len(parts)) as pool:
            for result in [pool.submit(work, part) for part in parts]:
                result.result()  # re-raises a worker's exception

    def finish(self) -> np.ndarray:
        """Finalise all remaining planes and return the label volume."""
        remaining = self.shape[2] - self._z0
        if remaining > 0:
            self._finalise(remaining)
        self._z0 = self.shape[2]
        return self.labels
