"""The whole job end to end on tiny sizes, through local Ray: two online rounds, then the evaluation of both.

The job runs in a child process, as `make demo` does: an in-process local Ray (and Ray Data's per-process state)
must not be shared with the stage-1 tests that connect this pytest process to their own `ray start` cluster.
"""

from __future__ import annotations

import multiprocessing

import polars as pl
import pytest
import torch
from diffusers import UNet2DConditionModel
from helpers.configs import SMALL_JOB

from pipeline.config import load_config
from pipeline.evaluation import evaluate
from pipeline.reporting.model_card import read_front_matter
from pipeline.schema import noise_seed
from pipeline.stage1.store import count_rows
from pipeline.workflows.job import run_job

pytestmark = [pytest.mark.ray, pytest.mark.train, pytest.mark.e2e]

TINY_JOB = [*SMALL_JOB, "run.rounds=2", "train.eval_pairs=0", "vote.diagnostics=false"]


def test_two_online_rounds_then_evaluation(tmp_path):
    child = multiprocessing.get_context("spawn").Process(target=_two_rounds_then_evaluation, args=(tmp_path,))
    child.start()
    child.join(timeout=900)
    assert child.exitcode == 0, "the job or one of its checks failed in the child process (traceback above)"


def _two_rounds_then_evaluation(tmp_path):
    cfg = load_config("configs/tiny.yaml", [f"run.output_dir={tmp_path}", *TINY_JOB])
    out = run_job(cfg, progress=False)
    r0, r1 = out.rounds
    assert all(p.exists() for p in out.paths().values())
    assert r0.run_dir == tmp_path / "round_0" and r1.run_dir == tmp_path / "round_1"

    # Round 1 generated with round 0's policy, saved as a complete diffusers directory with the tuned UNet.
    assert r0.policy_dir is not None and r1.policy_dir is None
    models = pl.read_parquet(list(r1.candidates_dir.glob("*.parquet")))["model"].unique().to_list()
    assert models == [str(r0.policy_dir)]
    exported = UNet2DConditionModel.from_pretrained(r0.policy_dir / "unet").state_dict()
    trained = UNet2DConditionModel.from_pretrained(r0.final_dir / "unet").state_dict()
    assert all(torch.equal(exported[k], trained[k]) for k in trained)
    seeds0 = pl.read_parquet(list(r0.candidates_dir.glob("*.parquet")))["seed"].unique().sort().to_list()
    seeds1 = pl.read_parquet(list(r1.candidates_dir.glob("*.parquet")))["seed"].unique().sort().to_list()
    assert not set(seeds0) & set(seeds1), "each round draws fresh candidate seeds"

    # Both rounds evaluated against the original base on the same 4 held-out items.
    assert out.eval is not None
    frame = out.eval.frame
    metrics = [s.name for s in cfg.scoring.scorers]
    assert frame["run"].unique(maintain_order=True).to_list() == ["round_0", "round_1"]
    summary = ["average", "worst_metric", "majority", "won_all", "lost_all"]
    assert frame["metric"].unique(maintain_order=True).to_list() == [*metrics, *summary]
    assert frame["prompt_set"].unique().to_list() == ["tiny_eval"] and frame[
        "n_clusters"
    ].unique().to_list() == [2]
    assert frame["n"].unique().to_list() == [4]
    assert ((frame["ci_low"] <= frame["win_rate"]) & (frame["win_rate"] <= frame["ci_high"])).all()
    per_image = pl.read_parquet(out.eval.per_image)
    eval_seeds = {noise_seed(p, k) for p in per_image["prompt_id"].unique() for k in (1_000_000, 1_000_001)}
    assert per_image.height == 8 and set(per_image["seed"]) == eval_seeds
    assert "| round_0 |" in out.eval.markdown.read_text()

    # Each round's weights and its exported policy carry a model card with that round's evaluation.
    policy_card = (r0.policy_dir / "README.md").read_text()
    assert read_front_matter(policy_card)["library_name"] == "diffusers"
    assert "A complete diffusers pipeline" in policy_card and "| majority |" in policy_card
    for r in (r0, r1):
        assert "| majority |" in (r.final_dir / "README.md").read_text()

    # A rerun finds every image already generated and reproduces the same table.
    n_images = count_rows(out.eval.candidates_dir)
    assert n_images == 3 * 4  # base + two policies, 4 items each
    again = evaluate(cfg, out.tuned, progress=False)
    assert count_rows(again.candidates_dir) == n_images
    assert again.frame.equals(frame)
