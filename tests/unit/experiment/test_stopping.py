"""The median stopping rule."""

from __future__ import annotations

from fjord.experiment.stopping import MedianStopping

COMPLETED = [[(0, 0.6), (1, 0.7), (2, 0.8)], [(0, 0.5), (1, 0.6), (2, 0.7)], [(0, 0.7), (1, 0.8), (2, 0.9)]]


def test_a_trial_below_the_median_of_running_averages_is_stopped():
    rule = MedianStopping(start_step=1)
    # running averages up to step 1: 0.65, 0.55, 0.75 -> median 0.65
    assert rule.should_stop([(0, 0.5), (1, 0.6)], COMPLETED, "max")
    assert not rule.should_stop([(0, 0.5), (1, 0.66)], COMPLETED, "max")


def test_best_value_so_far_counts_not_the_last():
    rule = MedianStopping(start_step=1)
    assert not rule.should_stop([(0, 0.7), (1, 0.3)], COMPLETED, "max")


def test_minimising():
    rule = MedianStopping(start_step=1)
    losses = [[(s, 1 - v) for s, v in curve] for curve in COMPLETED]
    assert rule.should_stop([(0, 0.5), (1, 0.4)], losses, "min")  # median 0.35: 0.4 is worse
    assert not rule.should_stop([(0, 0.5), (1, 0.3)], losses, "min")


def test_nothing_stops_too_early_or_when_disabled():
    curve = [(0, 0.0), (1, 0.0), (2, 0.0)]
    assert not MedianStopping(min_trials=4).should_stop(curve, COMPLETED, "max")
    assert not MedianStopping(start_step=3).should_stop(curve, COMPLETED, "max")
    assert not MedianStopping(enabled=False).should_stop(curve, COMPLETED, "max")
    assert not MedianStopping().should_stop([], COMPLETED, "max")
    assert MedianStopping().should_stop(curve, COMPLETED, "max")


def test_completed_trials_without_reports_at_that_step_do_not_count():
    late = [[(5, 0.9)], [(5, 0.9)], [(5, 0.9)]]
    assert not MedianStopping(start_step=0).should_stop([(0, 0.1)], late, "max")
