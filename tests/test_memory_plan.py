"""Memory-bounded window planning."""

from __future__ import annotations

import pytest

from mhub_cpu.errors import ProcessingError
from mhub_cpu.inference.memory import estimated_peak_mb, plan_within_memory

W1_GRID, ROI = (244, 202, 224), (224, 224, 144)


def test_without_budget_the_plan_keeps_the_model_window() -> None:
    plan = plan_within_memory(W1_GRID, ROI, "sparse", 0.25, 16, 25, 32, None)
    assert plan.window == (224, 208, 144)


@pytest.mark.parametrize("budget", [4000, 2500, 1500])
def test_budget_is_respected_and_windows_stay_valid(budget: float) -> None:
    plan = plan_within_memory(W1_GRID, ROI, "sparse", 0.25, 16, 25, 32, budget)
    assert estimated_peak_mb(plan, W1_GRID, 25, 32) <= budget
    assert all(w % 16 == 0 and w >= 32 for w in plan.window)
    assert plan.count > 4


def test_smaller_budget_never_needs_less_memory() -> None:
    estimates = [
        estimated_peak_mb(plan_within_memory(W1_GRID, ROI, "sparse", 0.25, 16, 25, 32, b), W1_GRID, 25, 32)
        for b in (6000, 4000, 3000, 2000)
    ]
    assert estimates == sorted(estimates, reverse=True)


def test_impossible_budget_is_a_clear_error() -> None:
    with pytest.raises(ProcessingError, match="too small"):
        plan_within_memory(W1_GRID, ROI, "sparse", 0.25, 16, 25, 32, 300)
