"""Stage 2 on disk: `run_vote` and the CLI write the pairs contract, the manifest and the diagnostics; bad input
is an error or a counted drop."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers.configs import ROOT, run_config

from pipeline.config import ConfigError, RunConfig, load_config
from pipeline.data.pickapic import export_pairs, human_pairs_to_pairs, import_pickapic
from pipeline.io import read_manifest, write_parquet_atomic
from pipeline.schema import candidates_schema, pairs_schema
from pipeline.testing.candidates import candidates_from_scores, random_candidates
from pipeline.vote import main
from pipeline.voting import read_pairs, run_vote
from pipeline.voting.pairing import CandidatesError, pair_id
from pipeline.voting.strategies import StrategyError
from pipeline.voting.writer import PART_NAME

METRICS = ["hps", "pick", "aes", "ir", "clip"]
ONE_FILE = PART_NAME.format(0)  # a small table is written as one file


def make_run(tmp_path: Path, table: pa.Table | pl.DataFrame, **vote: object) -> RunConfig:
    if isinstance(table, pl.DataFrame):
        table = table.to_arrow()
    write_parquet_atomic(table, tmp_path / "candidates" / "part-00000.parquet")
    return run_config(tmp_path, vote=vote)


def test_run_vote_writes_the_pairs_contract(tmp_path):
    table = random_candidates(12, 5, METRICS, seed=1)
    assert table.schema == candidates_schema(METRICS)
    cfg = make_run(tmp_path, table)
    out = run_vote(cfg)
    assert out == tmp_path / "pairs" / "majority"
    written = pq.read_table(out / ONE_FILE)
    assert written.schema == pairs_schema(METRICS)  # types and non-null flags, as readers see the file
    manifest = read_manifest(out)
    counts = manifest["counts"]
    assert counts["pairs_possible"] == 12 * 10 == counts["pairs_formed"]
    assert counts["pairs_kept"] == written.num_rows
    assert counts["pairs_kept"] + sum(counts["pairs_dropped"].values()) == counts["pairs_formed"]
    assert (
        manifest["strategy"] == "majority" and manifest["min_agree"] == 3 and manifest["metrics"] == METRICS
    )
    # The trainer joins pairs to candidates by image id: every id must resolve, inside the same prompt.
    pairs = pl.from_arrow(written)
    cands = pl.from_arrow(table).select("image_id", "prompt_id")
    for side in ("w", "l"):
        joined = pairs.join(cands, left_on=f"image_id_{side}", right_on="image_id", how="left")
        assert joined["prompt_id_right"].null_count() == 0
        assert (joined["prompt_id"] == joined["prompt_id_right"]).all()
    assert pairs["pair_id"].to_list() == [
        pair_id(w, lo) for w, lo in pairs.select("image_id_w", "image_id_l").iter_rows()
    ]
    assert read_pairs(tmp_path).collect().height == written.num_rows
    assert not list((tmp_path / "pairs").glob(".*"))  # no staging leftovers


def test_a_large_vote_is_written_by_parallel_writers_without_loss(tmp_path, monkeypatch):
    import pipeline.voting.writer as vote_writer

    table = random_candidates(40, 6, METRICS, seed=3)
    reference = run_vote(make_run(tmp_path / "one", table, diagnostics=False))
    monkeypatch.setattr(vote_writer, "ROW_GROUP_ROWS", 50)  # 600 pairs → many row groups over two files
    out = run_vote(make_run(tmp_path / "many", table, diagnostics=False))
    manifest = read_manifest(out)
    assert manifest["files"] == [PART_NAME.format(0), PART_NAME.format(1)]
    assert sorted(p.name for p in out.glob("*.parquet")) == manifest["files"]
    both = pl.read_parquet(out / "*.parquet")
    assert both.height == manifest["counts"]["pairs_kept"] == read_manifest(reference)["counts"]["pairs_kept"]
    assert both["pair_id"].is_unique().all()
    assert both.sort("pair_id").equals(read_pairs(tmp_path / "one").collect().sort("pair_id"))
    assert manifest["counts"] == read_manifest(reference)["counts"]


def test_a_failed_write_publishes_nothing_and_keeps_the_previous_pairs(tmp_path, monkeypatch):
    cfg = make_run(tmp_path, random_candidates(6, 4, METRICS), diagnostics=False)
    out = run_vote(cfg)
    before = pl.read_parquet(out / "*.parquet")

    def disk_full(self, table, row_group_size=None):
        raise OSError("No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", disk_full)
    cfg.vote.min_agree = 5
    with pytest.raises(OSError, match="No space left"):
        run_vote(cfg)
    assert pl.read_parquet(out / "*.parquet").equals(before)
    assert read_manifest(out)["min_agree"] == 3
    assert not [p for p in (tmp_path / "pairs").iterdir() if p.name != "majority"]  # no staging leftovers


def test_rerun_replaces_the_previous_pairs(tmp_path):
    cfg = make_run(tmp_path, random_candidates(6, 4, METRICS))
    first = pq.read_table(run_vote(cfg) / ONE_FILE).num_rows
    cfg.vote.min_agree = 5
    out = run_vote(cfg)
    assert sorted(p.name for p in out.iterdir()) == ["diagnostics", "manifest.json", ONE_FILE]
    again = pq.read_table(out / ONE_FILE)
    assert again.num_rows < first
    assert set(again.column("votes_w").to_pylist()) == {5}


def test_cli_runs_several_strategies(tmp_path, capsys):
    make_run(tmp_path, random_candidates(5, 4, METRICS))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run": {"output_dir": str(tmp_path)}, "vote": {"diagnostics": False}}))
    assert main(["--config", str(config), "--strategy", "single:pick", "--strategy", "sum"]) == 0
    assert {p.name for p in (tmp_path / "pairs").iterdir()} == {"single_pick", "sum"}
    assert "single_pick: kept" in capsys.readouterr().out
    assert main(["--config", str(config), "--strategy", "all"]) == 0
    expected = {"majority", "weighted_majority", "sum", "normalized_sum", "random_metric"}
    assert {p.name for p in (tmp_path / "pairs").iterdir()} == expected | {f"single_{m}" for m in METRICS}


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    make_run(tmp_path, BASE.drop("score_a", "score_b", "score_c"))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run": {"output_dir": str(tmp_path)}}))
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vote: ") and "no score_<metric> columns" in err and "Traceback" not in err


def test_script_entry_point(tmp_path):
    """`python pipeline/vote.py` (a script path, not -m) works too, with --set overrides."""
    make_run(tmp_path, random_candidates(3, 3, METRICS))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run": {"output_dir": str(tmp_path)}}))
    result = subprocess.run(
        [sys.executable, "pipeline/vote.py", "--config", str(config), "--set", "vote.diagnostics=false"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "majority: kept" in result.stdout
    assert not (tmp_path / "pairs" / "majority" / "diagnostics").exists()


def test_diagnostics_agree_with_a_direct_computation(tmp_path):
    table = random_candidates(8, 5, METRICS, seed=4)
    out = run_vote(make_run(tmp_path, table))
    diag = out / "diagnostics"
    for name in (
        "summary.md",
        "diagnostics.json",
        "agreement.png",
        "scores.png",
        "margins.png",
        "strategies.png",
        "overruled.png",
    ):
        assert (diag / name).stat().st_size > 0, name
    body = json.loads((diag / "diagnostics.json").read_text())
    assert body["sampled"] is False and "all 8 prompts" in (diag / "summary.md").read_text()

    # Kendall tau-b and sign agreement straight from the scores, prompt by prompt, pooled.
    frame = pl.from_arrow(table)
    signs = {m: [] for m in METRICS}
    for _, group in frame.group_by("prompt_id"):
        for r, s in itertools.combinations(group.to_dicts(), 2):
            for m in METRICS:
                signs[m].append(np.sign(r[f"score_{m}"] - s[f"score_{m}"]))
    for i, j in itertools.combinations(range(len(METRICS)), 2):
        x, y = np.array(signs[METRICS[i]]), np.array(signs[METRICS[j]])
        c, d = np.sum(x * y > 0), np.sum(x * y < 0)
        tau = (c - d) / math.sqrt((len(x) - np.sum(x == 0)) * (len(y) - np.sum(y == 0)))
        assert body["kendall_tau_b"][i][j] == pytest.approx(tau)
        assert body["agreement"][i][j] == pytest.approx(np.mean(x == y))

    # Overruled: share of kept majority pairs where the metric voted for the loser.
    pairs = pl.read_parquet(out / ONE_FILE)
    for m in METRICS:
        assert body["overruled"][m]["overruled"] == pytest.approx((pairs[f"vote_{m}"] == -1).mean())
    margins = {(r["votes_for"], r["votes_against"]): r["pairs"] for r in body["margin_histogram_exact"]}
    assert sum(margins.values()) == read_manifest(out)["counts"]["pairs_formed"]
    kept_share = {r["strategy"]: r["kept_share"] for r in body["strategies"]}
    assert kept_share["majority"] == pytest.approx(pairs.height / 80)


def test_diagnostics_say_when_they_sample(tmp_path):
    out = run_vote(make_run(tmp_path, random_candidates(10, 3, METRICS), diagnostics_max_prompts=4))
    body = json.loads((out / "diagnostics" / "diagnostics.json").read_text())
    assert body["sampled"] is True and body["sample_prompts"] == 4 and body["sample_pairs"] == 4 * 3
    assert "Computed on a sample: 4 of 10 prompts" in (out / "diagnostics" / "summary.md").read_text()
    assert sum(r["pairs"] for r in body["margin_histogram_exact"]) == 30  # still exact


def test_pairing_best_vs_worst_and_random_k(tmp_path):
    # Prompt 0: image 2 is best on every metric, image 0 worst; Borda picks exactly that pair.
    scores = {
        m: np.array([[0.0, 1.0, 2.0, 1.5], [3.0, 2.0, 1.0, 0.0]], dtype=np.float32) for m in ("a", "b", "c")
    }
    table = candidates_from_scores(["p0", "p1"], scores)
    ids = table.column("image_id").to_pylist()
    out = run_vote(make_run(tmp_path, table, pairing="best_vs_worst", diagnostics=False))
    pairs = pl.read_parquet(out / ONE_FILE)
    assert set(pairs.select("image_id_w", "image_id_l").iter_rows()) == {(ids[2], ids[0]), (ids[4], ids[7])}
    assert read_manifest(out)["counts"]["pairs_formed"] == 2

    many = random_candidates(6, 6, METRICS)
    picks = []
    for seed in (0, 0, 1):
        out = run_vote(make_run(tmp_path, many, pairing="random_k", random_k=4, seed=seed, diagnostics=False))
        formed = read_manifest(out)["counts"]["pairs_formed"]
        assert formed == 6 * 4
        picks.append(set(pl.read_parquet(out / ONE_FILE)["pair_id"]))
    assert picks[0] == picks[1] and picks[0] != picks[2]


def test_export_of_voted_pairs_round_trips(tmp_path):
    out = run_vote(make_run(tmp_path, random_candidates(4, 4, METRICS), diagnostics=False))
    exported = export_pairs(out, tmp_path / "candidates", tmp_path / "export.parquet")
    _, human = import_pickapic(exported)
    assert human_pairs_to_pairs(human).num_rows == pq.read_table(out / ONE_FILE).num_rows


BASE = pl.from_arrow(random_candidates(3, 3, ["a", "b", "c"]))


@pytest.mark.parametrize(
    "frame, message",
    [
        (BASE.drop("score_a", "score_b", "score_c"), "no score_<metric> columns"),
        (BASE.with_columns(pl.col("score_a").cast(pl.String)), "'score_a' must be numeric, found String"),
        (
            BASE.with_columns(
                score_b=pl.when(pl.col("seed") == 1).then(float("nan")).otherwise(pl.col("score_b"))
            ),
            "NaN, infinite or null scores in {'b': 3}",
        ),
        (
            BASE.with_columns(
                score_c=pl.when(pl.col("seed") == 0).then(float("inf")).otherwise(pl.col("score_c"))
            ),
            "{'c': 3}",
        ),
        (pl.concat([BASE, BASE.head(2)]), "2 duplicate image_id rows"),
        (BASE.head(0), "the candidates table is empty"),
        (BASE.drop("prompt_id"), "missing column(s) ['prompt_id']"),
    ],
    ids=["no-scores", "non-numeric", "nan", "inf", "duplicates", "empty", "no-prompt-id"],
)
def test_bad_input_is_a_clear_error(tmp_path, frame, message):
    cfg = make_run(tmp_path, frame)
    with pytest.raises(CandidatesError) as err:
        run_vote(cfg)
    assert message in str(err.value) and str(tmp_path / "candidates") in str(err.value)
    assert not (tmp_path / "pairs" / "majority").exists()


def test_non_finite_scores_can_be_dropped_and_counted(tmp_path):
    frame = BASE.with_columns(
        score_b=pl.when(pl.col("seed") == 1).then(float("nan")).otherwise(pl.col("score_b"))
    )
    out = run_vote(make_run(tmp_path, frame, bad_scores="drop", diagnostics=False))
    counts = read_manifest(out)["counts"]
    assert counts["images_dropped_nonfinite"] == 3 and counts["nonfinite_by_metric"] == {"b": 3}
    assert counts["pairs_formed"] == 3  # 3 prompts × one pair of the 2 remaining images
    dropped_ids = set(frame.filter(pl.col("seed") == 1)["image_id"])
    pairs = pl.read_parquet(out / ONE_FILE)
    assert not dropped_ids & (set(pairs["image_id_w"]) | set(pairs["image_id_l"]))


def test_prompts_with_one_image_are_counted(tmp_path):
    frame = pl.concat([BASE, BASE.head(1).with_columns(image_id=pl.lit("lonely"), prompt_id=pl.lit("solo"))])
    counts = read_manifest(run_vote(make_run(tmp_path, frame, diagnostics=False)))["counts"]
    assert counts["prompts"] == 4 and counts["prompts_with_one_image"] == 1 and counts["pairs_formed"] == 9


@pytest.mark.parametrize(
    "vote, message",
    [
        ({"epsilon": {"nope": 0.1}}, "vote.epsilon names ['nope']"),
        ({"weights": {"zzz": 2.0}}, "vote.weights names ['zzz']"),
        ({"min_agree": 4}, "vote.min_agree = 4 exceeds"),
        ({"strategy": "single:d"}, "names metric 'd'"),
        ({"metrics": ["a", "x"]}, "vote.metrics names ['x']"),
    ],
)
def test_config_that_does_not_fit_the_table(tmp_path, vote, message):
    cfg = make_run(tmp_path, BASE, **vote)
    with pytest.raises(
        (StrategyError, CandidatesError), match=message.replace("[", r"\[").replace("]", r"\]")
    ):
        run_vote(cfg)


def test_vote_metrics_subset(tmp_path):
    out = run_vote(make_run(tmp_path, BASE, metrics=["a", "c"], diagnostics=False))
    assert pq.read_schema(out / ONE_FILE).names == pairs_schema(["a", "c"]).names


@pytest.mark.parametrize(
    "text, key",
    [
        ("vote:\n  strategy: majority_vote\n", "vote.strategy"),
        ("vote:\n  epsilon: {a: -1}\n", "vote.epsilon"),
    ],
)
def test_config_rejects_bad_vote_keys(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load_config(path)


def test_the_full_size_vote_has_four_voters_and_counts_their_splits():
    """configs/sd15.yaml: the paper's four metrics vote (3 of 4 needed), 2-2 splits are dropped and counted, and
    ImageReward, scored beside them, decides nothing."""
    from pipeline.voting import vote_frame

    vote = load_config(ROOT / "configs" / "sd15.yaml").vote
    metrics = ["hpsv2", "clip", "pickscore", "aesthetic", "imagereward"]
    table = pl.from_arrow(random_candidates(30, 4, metrics, seed=3))
    pairs, counts = vote_frame(table, vote)
    assert [c for c in pairs.columns if c.startswith("vote_")] == [f"vote_{m}" for m in metrics[:4]]
    assert set(pairs["n_metrics"]) == {4} and set(pairs["votes_w"]) <= {3, 4}
    assert counts["pairs_formed"] == 30 * 6 == counts["pairs_kept"] + sum(counts["pairs_dropped"].values())
    assert counts["pairs_dropped"]["no_majority_split"] > 0
    reshuffled = table.with_columns(pl.col("score_imagereward").shuffle(seed=1))
    again, _ = vote_frame(reshuffled, vote)
    assert again.sort("pair_id").equals(pairs.sort("pair_id"))
