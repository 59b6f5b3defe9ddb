"""The report's bounded sampling, as pure functions: never more than the limit, always the marked rows, seeded."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.reporting.sampling import (
    ReportLimits,
    candidates_to_show,
    downsample_curve,
    ranks_descending,
    sample_indices,
    sample_keys,
    shown_note,
)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 5000), k=st.integers(0, 300), seed=st.integers(0, 10))
def test_sample_indices_are_bounded_distinct_sorted_and_seeded(n, k, seed):
    chosen = sample_indices(n, k, seed)
    assert len(chosen) == min(n, k)
    assert len(set(chosen.tolist())) == len(chosen)
    assert np.all(np.diff(chosen) > 0)
    assert np.all((chosen >= 0) & (chosen < max(n, 1)))
    assert np.array_equal(chosen, sample_indices(n, k, seed))


def test_sample_indices_takes_everything_up_to_the_limit_and_differs_by_seed():
    assert sample_indices(5, 8, 0).tolist() == [0, 1, 2, 3, 4]
    assert not np.array_equal(sample_indices(10_000, 20, 0), sample_indices(10_000, 20, 1))
    with pytest.raises(ValueError):
        sample_indices(-1, 3, 0)


def test_sample_keys_do_not_depend_on_the_order_or_repeats_of_the_keys():
    keys = [f"p{i}" for i in range(1000)]
    rng = np.random.default_rng(3)
    shuffled = [keys[i] for i in rng.permutation(1000)] + keys[:50]  # other order, repeated keys
    assert sample_keys(keys, 8, 0) == sample_keys(shuffled, 8, 0)
    assert len(sample_keys(keys, 8, 0)) == 8 and sample_keys(keys[:3], 8, 0) == keys[:3]


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 40),
    m=st.integers(1, 6),
    limit=st.integers(1, 20),
    seed=st.integers(0, 1000),
)
def test_candidates_to_show_keep_every_metric_best_and_worst_within_the_limit(n, m, limit, seed):
    scores = np.random.default_rng(seed).normal(size=(n, m))
    shown = candidates_to_show(scores, limit)
    assert len(shown) == min(n, limit)
    assert len(set(shown.tolist())) == len(shown) and np.all(np.diff(shown) > 0)
    marked = {int(np.argmax(scores[:, j])) for j in range(m)} | {
        int(np.argmin(scores[:, j])) for j in range(m)
    }
    if len(marked) <= limit:
        assert marked <= set(shown.tolist())


def test_ranks_put_the_highest_score_first_and_share_ties():
    scores = np.array([[0.1, 5.0], [0.3, 5.0], [0.2, 1.0]])
    assert ranks_descending(scores).tolist() == [[3, 1], [1, 1], [2, 3]]


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 3000), max_points=st.integers(2, 200))
def test_downsampled_curve_is_bounded_keeps_its_ends_and_its_mean_trend(n, max_points):
    steps = np.arange(1, n + 1, dtype=float) * 10
    values = np.sin(steps / 300.0)
    xs, ys = downsample_curve(steps, values, max_points)
    assert len(xs) == len(ys) == min(n, max_points)
    if n:
        assert xs[0] == steps[0] and xs[-1] == steps[-1] and ys[0] == values[0] and ys[-1] == values[-1]
        assert np.all(np.diff(xs) > 0)
        assert values.min() - 1e-12 <= ys.min() and ys.max() <= values.max() + 1e-12


def test_downsampled_buckets_are_means():
    xs, ys = downsample_curve(np.arange(10.0), np.arange(10.0) ** 2, 4)
    # first and last points, then two buckets of the eight inner points
    assert xs.tolist() == [0.0, 2.5, 6.5, 9.0]
    assert ys.tolist() == [0.0, np.mean([1, 4, 9, 16]), np.mean([25, 36, 49, 64]), 81.0]


def test_limits_are_checked_and_the_note_says_when_it_sampled():
    with pytest.raises(ValueError, match="prompts"):
        ReportLimits(prompts=0)
    with pytest.raises(ValueError, match="curve_points"):
        ReportLimits(curve_points=1)
    assert shown_note(24, 24, "prompts") == "all 24 prompts"
    assert shown_note(8, 125_000, "prompts") == "8 of 125,000 prompts (a seeded sample)"
