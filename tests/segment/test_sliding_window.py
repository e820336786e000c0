"""Sliding window: MONAI-identical placement and weights, slab stitching equals full-buffer stitching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from mhub_cpu.segment.inferer import sliding_window_labels
from mhub_cpu.segment.merger import SlabStitcher
from mhub_cpu.segment.splitter import WindowStrategy, make_plan, padding_for, plan_sparse, plan_windows, window_starts
from mhub_cpu.segment.weights import gaussian_importance


@pytest.mark.parametrize("length,roi,overlap", [(243, 96, 0.625), (96, 96, 0.625), (100, 96, 0.5), (401, 144, 0.25), (224, 160, 0.0)])
def test_window_starts_match_monai(length: int, roi: int, overlap: float) -> None:
    interval = _get_scan_interval((length,), (roi,), 1, (overlap,))
    expected = sorted({s[0].start for s in dense_patch_slices((length,), (roi,), interval)})
    assert window_starts(length, roi, overlap) == expected


def test_gaussian_importance_matches_monai() -> None:
    roi = (32, 24, 16)
    expected = compute_importance_map(roi, mode="gaussian", sigma_scale=0.125, device="cpu").numpy()
    np.testing.assert_allclose(gaussian_importance(roi), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("strategy", list(WindowStrategy))
@pytest.mark.parametrize("shape", [(150, 97, 203), (40, 30, 20), (64, 48, 81)])
def test_windows_cover_every_voxel(strategy: str, shape: tuple[int, int, int]) -> None:
    roi = (64, 48, 80)
    for overlap in (0.0, 0.3, 0.625):
        plan = make_plan(shape, roi, strategy, overlap, divisor=16)
        assert all(p >= n for p, n in zip(plan.padded_shape, shape))
        assert all(w % 16 == 0 for w in plan.window) or strategy == "dense"
        covered = np.zeros(plan.padded_shape, dtype=bool)
        for x, y, z in plan.starts:
            assert x + plan.window[0] <= plan.padded_shape[0] and z + plan.window[2] <= plan.padded_shape[2]
            covered[x : x + plan.window[0], y : y + plan.window[1], z : z + plan.window[2]] = True
        assert covered.all(), overlap
        assert [s[2] for s in plan.starts] == sorted(s[2] for s in plan.starts), "slab order"


def test_sparse_plan_uses_fewest_windows_with_minimum_overlap() -> None:
    plan = plan_sparse((244, 202, 224), (224, 224, 144), min_overlap=0.25, divisor=16)
    assert plan.window == (224, 208, 144)  # the short axis gets a fitted window, not padding to 224
    assert plan.count == 4
    z_starts = sorted({s[2] for s in plan.starts})
    assert z_starts == [0, 80] and 144 - 80 >= 0.25 * 144
    dense = plan_windows((244, 202, 224), (224, 224, 144), overlap=0.625)
    assert dense.count == 6


def test_padding_is_symmetric_with_extra_voxel_after() -> None:
    assert padding_for((10, 96, 95), (16, 96, 96)) == [(3, 3), (0, 0), (0, 1)]


def _full_buffer_labels(shape, roi, classes, weights, windows):
    total = np.zeros((classes, *shape), dtype=np.float32)
    for (x, y, z), logits in windows:
        total[:, x : x + roi[0], y : y + roi[1], z : z + roi[2]] += logits * weights
    return np.argmax(total, axis=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("workers", [1, 3])
def test_slab_stitching_equals_full_buffer(seed: int, ties: bool, workers: int) -> None:
    """Random logits; with ``ties``, small integers and flat weights, so that classes often tie.
    With 3 workers, each step runs on 3 slices along X in threads."""
    rng = np.random.default_rng(seed)
    shape, roi, classes = (37, 29, 61), (16, 12, 20), 5
    plan = plan_windows(shape, roi, overlap=0.4)
    weights = np.ones(roi, np.float32) if ties else gaussian_importance(roi)
    draw = (lambda: rng.integers(0, 3, size=(classes, *roi))) if ties else (lambda: rng.normal(size=(classes, *roi)))
    windows = [(start, draw().astype(np.float32)) for start in plan.starts]
    stitcher = SlabStitcher(shape, roi, classes, weights, workers)
    for start, logits in windows:
        stitcher.add(start, logits.copy())  # add() overwrites its input
    np.testing.assert_array_equal(stitcher.finish(), _full_buffer_labels(shape, roi, classes, weights, windows))


def test_slab_stitcher_refuses_out_of_order_windows() -> None:
    stitcher = SlabStitcher((8, 8, 20), (8, 8, 8), 2, np.ones((8, 8, 8), np.float32))
    stitcher.add((0, 0, 10), np.zeros((2, 8, 8, 8), np.float32))
    with pytest.raises(ValueError):
        stitcher.add((0, 0, 2), np.zeros((2, 8, 8, 8), np.float32))


def test_sliding_window_matches_monai_inferer() -> None:
    """A fixed random 'network' (a per-voxel linear map) through our inferer and MONAI's."""
    from monai.inferers import sliding_window_inference

    rng = np.random.default_rng(3)
    volume = rng.normal(size=(40, 21, 57)).astype(np.float32)  # y smaller than the roi: padded
    roi, classes = (16, 24, 16), 4
    coefficients = rng.normal(size=(classes,)).astype(np.float32)
    offsets = rng.normal(size=(classes,)).astype(np.float32)

    def network_np(window: np.ndarray) -> np.ndarray:
        ramp = np.linspace(-1, 1, window.shape[2], dtype=np.float32)  # position-dependent, so placement matters
        return coefficients[:, None, None, None] * (window + ramp)[None] + offsets[:, None, None, None]

    def network_torch(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.stack([network_np(w[0].numpy()) for w in batch]))

    plan = plan_windows(volume.shape, roi, overlap=0.625)
    ours, count = sliding_window_labels(volume, network_np, plan, classes)
    logits = sliding_window_inference(torch.from_numpy(volume)[None, None], roi, 1, network_torch, overlap=0.625, mode="gaussian")
    expected = torch.argmax(torch.softmax(logits, 1), 1)[0].numpy()
    assert count > 1
    agreement = (ours == expected).mean()
    assert agreement > 0.999, agreement
