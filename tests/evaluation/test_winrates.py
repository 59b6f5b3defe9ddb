"""Win rates with hand-computed numbers, bootstrap intervals, and the report writers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.evaluation import tables
from pipeline.evaluation import winrates as wr


def test_wins_count_ties_as_half():
    np.testing.assert_array_equal(wr.wins([3, 1, 2], [1, 1, 5]), [1.0, 0.5, 0.0])
    np.testing.assert_array_equal(wr.wins([1.05, 1.3], [1.0, 1.0], epsilon=0.1), [0.5, 1.0])
    with pytest.raises(ValueError, match="shape"):
        wr.wins([1, 2], [1])


def test_majority_needs_more_metrics_for_tuned_than_for_base():
    per_metric = np.array([[1, 1, 0], [1, 0, 0], [0, 0.5, 0.5]])
    # item 0: 2 for tuned, 1 for base; item 1: 1–1 (the tie votes for neither); item 2: 0–2.
    np.testing.assert_array_equal(wr.majority_wins(per_metric), [1.0, 0.5, 0.0])


def test_win_rates_match_hand_computed_values():
    base = {"a": np.array([1, 1, 3, 2]), "b": np.array([1, -1, -1, -1])}
    tuned = {"a": np.array([2, 2, 2, 2]), "b": np.array([0, 0, 0, 0])}
    rates = {r.metric: r for r in wr.win_rates("run", tuned, base, samples=200)}
    assert rates["a"].win_rate == pytest.approx(0.625)  # wins 1, 1, 0, ½
    assert rates["b"].win_rate == pytest.approx(0.75)  # wins 0, 1, 1, 1
    assert rates["average"].win_rate == pytest.approx(0.6875)
    # majority per item: 1–1 → ½, 2–0 → 1, 1–1 → ½, (tie, 1) → 1
    assert rates["majority"].win_rate == pytest.approx(0.75)
    assert all(r.n == 4 and r.ci_low <= r.win_rate <= r.ci_high for r in rates.values())


def test_bootstrap_interval_is_seeded_and_has_the_normal_width():
    values = np.array([1.0, 0.0] * 200)
    idx = wr.bootstrap_indices(len(values), 2000, seed=3)
    low, high = wr.percentile_ci(values, idx, 0.95)
    # Binomial standard error at p = ½, n = 400 is 0.025: the 95% interval is about ±0.049.
    assert low == pytest.approx(0.451, abs=0.012) and high == pytest.approx(0.549, abs=0.012)
    assert (low, high) == wr.percentile_ci(values, wr.bootstrap_indices(400, 2000, seed=3), 0.95)
    assert wr.percentile_ci(np.ones(10), wr.bootstrap_indices(10, 100, 0), 0.95) == (1.0, 1.0)


def test_win_rates_reject_mismatched_metrics():
    with pytest.raises(ValueError, match="differ"):
        wr.win_rates("r", {"a": np.ones(2)}, {"b": np.ones(2)})


def _frame() -> pl.DataFrame:
    base = {"a": np.zeros(8), "b": np.zeros(8)}
    good = {"a": np.ones(8), "b": np.array([1, 1, 1, 1, -1, -1, -1, -1])}
    bad = {"a": -np.ones(8), "b": -np.ones(8)}
    return wr.to_frame(wr.win_rates("majority", good, base) + wr.win_rates("sum", bad, base))


def test_side_by_side_table_and_markdown():
    frame = _frame()
    wide = tables.side_by_side(frame)
    assert wide.columns == ["run", "a", "b", "average", "majority"]
    assert wide["run"].to_list() == ["majority", "sum"]
    assert wide.row(0)[1] == "1.000 [1.000, 1.000]"
    assert wide.row(1)[4] == "0.000 [0.000, 0.000]"
    text = tables.markdown(frame)
    assert "| run | a | b | average | majority |" in text
    assert "n = 8 items" in text


def test_writers_produce_readable_files(tmp_path):
    frame = _frame()
    md = tables.write_markdown(tmp_path / "eval" / "winrates.md", frame)
    pq = tables.write_parquet(tmp_path / "eval" / "winrates.parquet", frame)
    png = tables.plot(tmp_path / "eval" / "winrates.png", frame)
    assert md.read_text().startswith("# Win rate")
    assert pl.read_parquet(pq).equals(frame)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "winrates.md",
        "winrates.parquet",
        "winrates.png",
    ]
