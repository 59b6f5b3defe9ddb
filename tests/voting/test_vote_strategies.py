"""Each strategy on a hand-computed example: one prompt, three images, three metrics on different scales.

image  m1  m2   m3      per-metric preference      majority     sum (m2 ×100 dominates)
x      3   100  2       x~y: m1 x, m2 y, m3 x      x beats y    y (203) beats x (105)
y      2   200  1       x~z: m1 x, m2 z, m3 z      z beats x    z (304) beats x
z      1   300  3       y~z: m1 y, m2 z, m3 z      z beats y    z beats y
"""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.config import VoteSection
from pipeline.voting import vote_frame
from pipeline.voting.strategies import StrategyError, disk_name, parse_strategy


def example(**extra: list[float]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "image_id": ["x", "y", "z"],
            "prompt_id": ["p"] * 3,
            "prompt": ["a cat"] * 3,
            "score_m1": [3.0, 2.0, 1.0],
            "score_m2": [100.0, 200.0, 300.0],
            "score_m3": [2.0, 1.0, 3.0],
        },
        schema_overrides={"score_m1": pl.Float32, "score_m2": pl.Float32, "score_m3": pl.Float32},
    )
    return frame.with_columns(**{k: pl.Series(v, dtype=pl.Float32) for k, v in extra.items()})


def winners(pairs: pl.DataFrame) -> set[tuple[str, str]]:
    return set(pairs.select("image_id_w", "image_id_l").iter_rows())


def run(strategy: str, frame: pl.DataFrame | None = None, **vote: object) -> tuple[pl.DataFrame, dict]:
    return vote_frame(example() if frame is None else frame, VoteSection(**vote), strategy)


def test_majority_hand_example():
    pairs, counts = run("majority")
    assert winners(pairs) == {("x", "y"), ("z", "x"), ("z", "y")}
    row = pairs.filter(pl.col("image_id_w") == "x").row(0, named=True)
    assert (row["vote_m1"], row["vote_m2"], row["vote_m3"]) == (1, -1, 1)  # seen from the winner
    assert (row["votes_w"], row["votes_l"], row["n_metrics"]) == (2, 1, 3)
    assert row["confidence"] == pytest.approx(2 / 3)
    assert row["pair_id"] == "x~y" and row["strategy"] == "majority" and row["prompt"] == "a cat"
    assert counts["pairs_kept"] == 3 and counts["pairs_dropped"] == {}


def test_min_agree_drops_two_of_three():
    pairs, counts = run("majority", min_agree=3)
    assert pairs.height == 0
    assert counts["pairs_dropped"] == {"no_majority_below_min_agree": 3}


def test_epsilon_turns_small_differences_into_ties():
    # m1 differs by 1 between x and y: within ε = 1.5, so x~y is 1 vote against 1 → split, dropped.
    pairs, counts = run("majority", epsilon={"m1": 1.5})
    assert winners(pairs) == {("z", "x"), ("z", "y")}
    assert counts["pairs_dropped"] == {"no_majority_split": 1}
    zx = pairs.filter(pl.col("image_id_l") == "x").row(0, named=True)
    assert zx["vote_m1"] == -1  # x − z = 2 > ε: still a vote


def test_all_tied_pair_is_dropped():
    frame = pl.concat([example(), example().head(1).with_columns(image_id=pl.lit("x2"))])
    _, counts = run("majority", frame)
    assert counts["pairs_dropped"] == {"no_majority_all_tied": 1}
    assert counts["pairs_formed"] == 6


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("single:m1", {("x", "y"), ("x", "z"), ("y", "z")}),
        ("single_m2", {("y", "x"), ("z", "x"), ("z", "y")}),
        ("sum", {("y", "x"), ("z", "x"), ("z", "y")}),
        # z-scores within the prompt: x = 0, y = −1.22, z = +1.22 → the vote's answer, not the m2 scale's.
        ("normalized_sum", {("x", "y"), ("z", "x"), ("z", "y")}),
    ],
)
def test_score_based_strategies(strategy, expected):
    pairs, _ = run(strategy)
    assert winners(pairs) == expected
    assert set(pairs["strategy"]) == {disk_name(strategy)}


def test_single_metric_tie_is_dropped():
    frame = example().with_columns(score_m1=pl.Series([3.0, 3.0, 1.0], dtype=pl.Float32))
    pairs, counts = run("single:m1", frame)
    assert counts["pairs_dropped"] == {"tie": 1} and pairs.height == 2


def test_normalized_sum_over_the_table_uses_table_statistics():
    # A second prompt with large m1 and m3 values: over the table, their z-scores in prompt p shrink, m2 decides x~y.
    other = example().with_columns(
        image_id=pl.Series(["u", "v", "w"]),
        prompt_id=pl.lit("q"),
        score_m1=pl.Series([1000.0, 0.0, 500.0], dtype=pl.Float32),
        score_m3=pl.Series([1000.0, 0.0, 500.0], dtype=pl.Float32),
    )
    frame = pl.concat([example(), other])
    per_prompt, _ = run("normalized_sum", frame, normalize_scope="prompt")
    over_table, _ = run("normalized_sum", frame, normalize_scope="table")
    assert ("x", "y") in winners(per_prompt)
    assert ("y", "x") in winners(over_table)


def test_weighted_majority():
    # Unit weights: the majority. m2 weighted 3 of total 5: m2 alone (3 > 2.5) beats m1 + m3.
    plain, _ = run("weighted_majority")
    assert winners(plain) == winners(run("majority")[0])
    heavy, _ = run("weighted_majority", weights={"m2": 3.0})
    assert winners(heavy) == {("y", "x"), ("z", "x"), ("z", "y")}
    # m1 weighted 2, m3 weighted 2, m2 1 (total 5): x~y (x holds 4) stays x; y~z (z holds m2+m3 = 3 > 2.5).
    balanced, counts = run("weighted_majority", weights={"m1": 2.0, "m3": 2.0})
    assert winners(balanced) == {("x", "y"), ("z", "x"), ("z", "y")}
    # m1 = 1, m2 = 1, m3 = 0: m1 and m2 disagree on every pair → 1 against 1, all split.
    _, counts = run("weighted_majority", weights={"m3": 0.0})
    assert counts["pairs_dropped"] == {"no_majority_split": 3}


def test_random_metric_is_seeded_and_uses_one_metric_per_pair():
    frame = pl.concat(
        [
            example().with_columns(prompt_id=pl.lit(f"p{i}"), image_id=pl.col("image_id") + str(i))
            for i in range(40)
        ]
    )
    first, _ = run("random_metric", frame, seed=3)
    again, _ = run("random_metric", frame, seed=3)
    other, _ = run("random_metric", frame, seed=4)
    assert winners(first) == winners(again)
    assert winners(first) != winners(other)
    single = {m: winners(run(f"single:{m}", frame)[0]) for m in ("m1", "m2", "m3")}
    # Every decision is some metric's decision, and over 120 pairs every metric decides at least once.
    used = {m for m in single for pair in winners(first) if pair in single[m]}
    assert all(any(p in single[m] for m in single) for p in winners(first))
    assert used == {"m1", "m2", "m3"}


@pytest.mark.parametrize("name", ["single:", "single:Pick", "majority_vote", "sum "])
def test_unknown_strategy_names(name):
    with pytest.raises(StrategyError):
        parse_strategy(name)


def test_strategy_naming_a_missing_metric():
    with pytest.raises(StrategyError, match="names metric 'nope'"):
        run("single:nope")
