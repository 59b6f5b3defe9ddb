"""Win rates with hand-computed numbers, bootstrap intervals, and the report writers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.evaluation import tables
from pipeline.evaluation import winrates as wr
from pipeline.evaluation.compare import rates_frame
from pipeline.evaluation.protocol import read_parquet_protocol


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
    rates = wr.win_rates("majority", good, base) + wr.win_rates("sum", bad, base)
    return rates_frame([("tiny_eval", r) for r in rates], "base", held_out=["b"])


PROTOCOL = {
    "sampler": "ddim",
    "num_inference_steps": 10,
    "guidance_scale": 5.0,
    "height": 64,
    "width": 64,
    "dtype": "float32",
    "seeds": {"per_prompt": 4, "offset": 1000000},
    "prompt_sets": {"tiny_eval": {"source": "m.yaml", "n_prompts": 16, "version": "abc", "subsets": []}},
    "metrics": ["a (tiny)", "b (tiny)"],
    "bootstrap": {"unit": "prompt", "samples": 1000, "confidence": 0.95},
}


def test_side_by_side_table_and_markdown():
    frame = _frame()
    wide = tables.side_by_side(frame)
    stats = ["average", "worst_metric", "majority", "won_all", "lost_all"]
    assert wide.columns == ["baseline", "prompt_set", "run", "a", "b (held out)", *stats]
    assert wide["run"].to_list() == ["majority", "sum"]
    assert wide.row(0)[3] == "1.000 [1.000, 1.000]"
    assert wide.row(0)[wide.columns.index("worst_metric")].startswith("0.500 ")  # b: 4 of 8
    assert wide.row(1)[wide.columns.index("lost_all")] == "1.000 [1.000, 1.000]"
    text = tables.markdown(frame, protocol=PROTOCOL)
    assert "| run | a | b (held out) | average | worst_metric | majority | won_all | lost_all |" in text
    assert "## tiny_eval" in text and "n = 8 items" in text
    assert "Protocol: sampler `ddim`, 10 steps, guidance 5, 64×64, float32" in text
    assert "tiny_eval (16 prompts, m.yaml, version abc)" in text


def test_writers_produce_readable_files_with_the_protocol(tmp_path):
    frame = _frame()
    md = tables.write_markdown(tmp_path / "eval" / "winrates.md", frame, protocol=PROTOCOL)
    pq = tables.write_parquet(tmp_path / "eval" / "winrates.parquet", frame, protocol=PROTOCOL)
    png = tables.plot(tmp_path / "eval" / "winrates.png", frame)
    assert md.read_text().startswith("# Win rate")
    assert pl.read_parquet(pq).equals(frame)
    assert read_parquet_protocol(pq) == PROTOCOL
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "winrates.md",
        "winrates.parquet",
        "winrates.png",
    ]


def test_balance_statistics_match_hand_computed_values():
    # Three metrics, four items. Per-item wins (model over baseline):
    #   a: 1 1 0 1    b: 1 0 0 ½    c: 1 1 0 0
    base = {"a": np.zeros(4), "b": np.array([0, 1, 1, 0]), "c": np.array([0, 0, 1, 1])}
    model = {"a": np.array([1, 1, -1, 1]), "b": np.array([1, 0, 0, 0]), "c": np.array([1, 1, 0, 0])}
    rates = {r.metric: r.win_rate for r in wr.win_rates("m", model, base, samples=100)}
    assert rates["a"] == pytest.approx(0.75) and rates["b"] == pytest.approx(0.375)
    assert rates["c"] == pytest.approx(0.5)
    assert rates["worst_metric"] == pytest.approx(0.375)  # b, the metric the model serves worst
    assert rates["won_all"] == pytest.approx(0.25)  # item 0 only; item 3 has a tie on b
    assert rates["lost_all"] == pytest.approx(0.25)  # item 2
    assert rates["majority"] == pytest.approx(0.625)  # items: 3–0, 2–1, 0–3, 1–1 (½)


def test_swapping_the_sides_mirrors_every_item_and_statistic():
    rng = np.random.default_rng(0)
    a = {m: rng.integers(0, 3, 40).astype(float) for m in ("x", "y", "z")}
    b = {m: rng.integers(0, 3, 40).astype(float) for m in ("x", "y", "z")}
    for m in a:  # per item, for every metric: A over B = 1 − B over A (ties ½ on both sides)
        np.testing.assert_array_equal(wr.wins(a[m], b[m]), 1.0 - wr.wins(b[m], a[m]))
    ab = {r.metric: r for r in wr.win_rates("ab", a, b, samples=300, seed=5)}
    ba = {r.metric: r for r in wr.win_rates("ba", b, a, samples=300, seed=5)}
    for name in ("x", "y", "z", "average", "majority"):
        assert ab[name].win_rate == pytest.approx(1.0 - ba[name].win_rate)
        # The same resamples: the interval mirrors too.
        assert ab[name].ci_low == pytest.approx(1.0 - ba[name].ci_high)
    assert ab["won_all"].win_rate == pytest.approx(ba["lost_all"].win_rate)


def test_prompt_clustered_bootstrap_on_a_hand_made_case():
    # Prompt A: three seeds, all won; prompt B: one seed, lost. Resampling two prompts gives only
    # {A, A} → 1, {A, B} → 3/4, {B, B} → 0, with chances ¼, ½, ¼.
    values = np.array([1.0, 1.0, 1.0, 0.0])
    resamples = wr.draw_resamples(["A", "A", "A", "B"], samples=4000, seed=1)
    means = resamples.means(values)
    assert set(np.round(means, 6)) == {0.0, 0.75, 1.0}
    assert np.mean(means == 1.0) == pytest.approx(0.25, abs=0.03)
    assert np.mean(means == 0.75) == pytest.approx(0.5, abs=0.03)
    assert wr.percentile_interval(means, 0.95) == (0.0, 1.0)
    # Items resampled alone see four independent draws and a narrower interval around the same 0.75.
    item_means = wr.draw_resamples(np.arange(4), samples=4000, seed=1).means(values)
    assert np.mean(item_means == 0.0) < 0.01 and np.mean(item_means == 1.0) == pytest.approx(0.316, abs=0.03)
    rates = {
        r.metric: r for r in wr.win_rates("m", {"s": values}, {"s": np.full(4, 0.5)}, clusters=list("AAAB"))
    }
    assert (rates["s"].n, rates["s"].n_clusters) == (4, 2)
    assert (rates["s"].ci_low, rates["s"].ci_high) == (0.0, 1.0)


def test_clustered_and_item_bootstrap_agree_when_every_prompt_has_one_item():
    values = np.array([1.0, 0.0] * 50)
    clustered = wr.draw_resamples([f"p{i}" for i in range(100)], samples=3000, seed=2).means(values)
    alone = wr.draw_resamples(np.arange(100), samples=3000, seed=2).means(values)
    # Labels sort differently than positions, so the draws differ, but the distributions are the same.
    assert np.std(clustered) == pytest.approx(np.std(alone), rel=0.1)
    assert np.std(alone) == pytest.approx(0.05, rel=0.1)  # √(¼ / 100)
