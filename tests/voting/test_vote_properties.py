"""Properties of the vote that must hold for any scores (hypothesis draws the tables).

Scores are small integers so ties are frequent; each property is checked against a direct Python reading of the
raw scores, not against the vote's own intermediate columns.
"""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import VoteSection
from pipeline.voting import vote_frame

STRATEGIES = ["majority", "single:m0", "random_metric", "sum", "normalized_sum", "weighted_majority"]
SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def tables(draw, min_images: int = 1):
    """A candidates frame: 1–3 prompts of `min_images`–5 images, 1–5 metrics, integer scores in [−3, 3]."""
    n_metrics = draw(st.integers(1, 5))
    sizes = draw(st.lists(st.integers(min_images, 5), min_size=1, max_size=3))
    rows = []
    for p, size in enumerate(sizes):
        for i in range(size):
            scores = draw(st.lists(st.integers(-3, 3), min_size=n_metrics, max_size=n_metrics))
            rows.append(
                {
                    "image_id": f"p{p}i{i}",
                    "prompt_id": f"p{p}",
                    "prompt": f"prompt {p}",
                    **{f"score_m{k}": float(s) for k, s in enumerate(scores)},
                }
            )
    frame = pl.DataFrame(rows).with_columns(pl.col("^score_.*$").cast(pl.Float32))
    return frame, [f"m{k}" for k in range(n_metrics)]


def outcome(pairs: pl.DataFrame) -> dict[frozenset, tuple[str, int, int]]:
    """{unordered pair: (winner, votes_w, votes_l)}."""
    return {
        frozenset((r["image_id_w"], r["image_id_l"])): (r["image_id_w"], r["votes_w"], r["votes_l"])
        for r in pairs.iter_rows(named=True)
    }


@SETTINGS
@given(tables(min_images=2), st.sampled_from(STRATEGIES), st.data())
def test_swapping_two_images_flips_their_label(table, strategy, data):
    frame, _ = table
    prompt = data.draw(st.sampled_from(sorted(set(frame["prompt_id"]))))
    ids = frame.filter(pl.col("prompt_id") == prompt)["image_id"].to_list()
    a, b = data.draw(st.permutations(ids))[:2]
    swapped = frame.with_columns(
        pl.when(pl.col("image_id") == a)
        .then(pl.lit(b))
        .when(pl.col("image_id") == b)
        .then(pl.lit(a))
        .otherwise(pl.col("image_id"))
        .alias("image_id")
    ).select(frame.columns)
    before = outcome(vote_frame(frame, VoteSection(), strategy)[0])
    after = outcome(vote_frame(swapped, VoteSection(), strategy)[0])
    key = frozenset((a, b))
    assert (key in before) == (key in after)
    if key in before:
        w, vw, vl = before[key]
        assert after[key] == ({a, b}.difference({w}).pop(), vw, vl)


@SETTINGS
@given(tables(), st.integers(0, 4), st.sampled_from(["cube", "affine", "exp"]))
def test_majority_is_invariant_to_increasing_transforms(table, which, transform):
    frame, metrics = table
    col = f"score_{metrics[which % len(metrics)]}"
    f = {"cube": pl.col(col) ** 3, "affine": 7.5 * pl.col(col) - 40.0, "exp": (pl.col(col) / 2).exp()}[
        transform
    ]
    transformed = frame.with_columns(f.cast(pl.Float32).alias(col))
    before, counts_before = vote_frame(frame, VoteSection(), "majority")
    after, counts_after = vote_frame(transformed, VoteSection(), "majority")
    assert before.sort("pair_id").equals(after.sort("pair_id"))
    assert counts_before == counts_after


def reference_votes(frame: pl.DataFrame, metrics: list[str]) -> dict[tuple[str, str], tuple[int, int]]:
    """For every within-prompt ordered pair (w, l): metrics preferring w, metrics preferring l, straight from scores."""
    out = {}
    for _, group in frame.group_by("prompt_id"):
        rows = group.to_dicts()
        for r, s in itertools.permutations(rows, 2):
            pro = sum(r[f"score_{m}"] > s[f"score_{m}"] for m in metrics)
            con = sum(r[f"score_{m}"] < s[f"score_{m}"] for m in metrics)
            out[(r["image_id"], s["image_id"])] = (pro, con)
    return out


@SETTINGS
@given(tables(), st.one_of(st.none(), st.integers(1, 5)))
def test_every_kept_pair_has_the_majority_and_no_majority_pair_is_lost(table, min_agree):
    frame, metrics = table
    min_agree = None if min_agree is None else min(min_agree, len(metrics))
    pairs, _ = vote_frame(frame, VoteSection(min_agree=min_agree), "majority")
    need = min_agree or len(metrics) // 2 + 1
    reference = reference_votes(frame, metrics)
    for r in pairs.iter_rows(named=True):
        pro, con = reference[(r["image_id_w"], r["image_id_l"])]
        assert pro >= need and pro > con
        assert (r["votes_w"], r["votes_l"]) == (pro, con)
        assert np.isclose(r["confidence"], pro / len(metrics))
        assert [r[f"vote_{m}"] for m in metrics].count(1) == pro
    should_keep = {k for k, (pro, con) in reference.items() if pro >= need and pro > con}
    assert should_keep == set(pairs.select("image_id_w", "image_id_l").iter_rows())


@SETTINGS
@given(tables(), st.sampled_from(STRATEGIES))
def test_counts_add_up(table, strategy):
    frame, _ = table
    pairs, counts = vote_frame(frame, VoteSection(), strategy)
    sizes = frame.group_by("prompt_id").len()["len"].to_list()
    assert counts["pairs_possible"] == sum(n * (n - 1) // 2 for n in sizes)
    assert counts["pairs_formed"] == counts["pairs_possible"]
    assert counts["pairs_kept"] + sum(counts["pairs_dropped"].values()) == counts["pairs_formed"]
    assert counts["pairs_kept"] == pairs.height == pairs["pair_id"].n_unique()
    assert counts["prompts"] == len(sizes)
    assert counts["prompts_with_one_image"] == sizes.count(1)
    assert counts["candidates"] == frame.height
