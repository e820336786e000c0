"""Memory-bounded window planning."""

from __future__ import annotations

import pytest

from mhub_cpu.core.errors import ProcessingError
from mhub_cpu.segment.memory import NetworkFootprint, estimated_peak_mb, plan_within_memory
from mhub_cpu.segment.splitter import WindowStrategy

W1_GRID, ROI = (244, 202, 224), (224, 224, 144)
W1_F32 = NetworkFootprint(classes=25, init_filters=32, weights_mb=332.0)  # the W1 benchmark network
W3_INT8 = NetworkFootprint(classes=118, init_filters=32, weights_mb=83.0, int8=True)


def test_without_budget_the_plan_keeps_the_model_window() -> None:
    plan = plan_within_memory(W1_GRID, ROI, WindowStrategy.SPARSE, 0.25, 16, W1_F32, None)
    assert plan.window == (224, 208, 144)


@pytest.mark.parametrize("budget", [4000, 2500, 1500])
def test_budget_is_respected_and_windows_stay_valid(budget: float) -> None:
    plan = plan_within_memory(W1_GRID, ROI, WindowStrategy.SPARSE, 0.25, 16, W1_F32, budget)
    assert estimated_peak_mb(plan, W1_GRID, W1_F32) <= budget
    assert all(w % 16 == 0 and w >= 32 for w in plan.window)
    w = plan.window
    assert w[0] * w[1] * w[2] < 224 * 208 * 144, "the model's window does not fit, so it must shrink"


def test_smaller_budget_never_needs_less_memory() -> None:
    estimates = [
        estimated_peak_mb(plan_within_memory(W1_GRID, ROI, WindowStrategy.SPARSE, 0.25, 16, W1_F32, b), W1_GRID, W1_F32)
        for b in (6000, 4000, 3000, 2000)
    ]
    assert estimates == sorted(estimates, reverse=True)


def test_impossible_budget_is_a_clear_error() -> None:
    with pytest.raises(ProcessingError, match="too small"):
        plan_within_memory(W1_GRID, ROI, WindowStrategy.SPARSE, 0.25, 16, W1_F32, 300)


def test_budgeted_window_computes_fewer_voxels_than_shrinking_only_the_slab_axis() -> None:
    """Many classes (W3-like): the search beats the obvious plan of thinner slabs under the same budget."""
    from mhub_cpu.segment.splitter import make_plan

    grid, budget = (320, 238, 400), 8000
    chosen = plan_within_memory(grid, ROI, WindowStrategy.SPARSE, 0.25, 32, W3_INT8, budget)
    slab_only = [
        plan for plan in (make_plan(grid, (224, 224, z), WindowStrategy.SPARSE, 0.25, 32) for z in (144, 112, 80, 64, 32))
        if estimated_peak_mb(plan, grid, W3_INT8) <= budget
    ]
    assert slab_only, "some thinner-slab plans must fit, or the comparison is empty"
    assert estimated_peak_mb(chosen, grid, W3_INT8) <= budget
    computed = lambda plan: plan.count * plan.window[0] * plan.window[1] * plan.window[2]  # noqa: E731
    assert all(computed(chosen) <= computed(plan) for plan in slab_only)
