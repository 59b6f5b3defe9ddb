"""The paper's experiment, reduced, end to end: relabel a small synthetic Pick-a-Pic table, train the six methods
(one of them as its own `accelerate launch` job, as on a cluster), evaluate against the base and head to head, write
the table; then a rerun that redoes nothing, and a changed setting that is refused.

Reduced sizes: 3 training captions × 2 images (3 human pairs), 2 training steps per method, 4 evaluation items
(2 prompt sets × 2 prompts × 1 seed), 32×32 images. It runs in a child process, as the job test does: an in-process
local Ray must not be shared with the stage-1 tests that connect this pytest process to their own cluster.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from helpers.configs import ROOT, run_config

from pipeline.config import load_config
from pipeline.testing.pickapic_synthetic import SyntheticPickapicSettings, write_synthetic_pickapic
from pipeline.workflows.experiment import run_experiment
from pipeline.workflows.parts import PartChanged

pytestmark = [pytest.mark.ray, pytest.mark.train, pytest.mark.e2e]

METHODS = ["balanced_dpo", "diffusion_dpo", "static_reference", "random_metric", "sum", "normalized_sum"]
REDUCED = [
    "model.pretrained=tiny/sd15",
    "generation.num_inference_steps=3",
    "generation.height=32",
    "generation.width=32",
    "eval.seeds_per_prompt=1",
    "eval.bootstrap_samples=100",
    "train.max_steps=2",
    "train.batch_size=2",
    "train.checkpoint_every=2",
    "train.tracker=none",
    "train.eval_pairs=0",
    "train.ref_update.every=1",
    "vote.diagnostics=false",
]


def reduced_config(tmp_path, *overrides):
    table = tmp_path / "pickapic"
    if not (table / "settings.json").is_file():
        write_synthetic_pickapic(table, SyntheticPickapicSettings(3, 2, images_per_caption=2, size=32))
    return run_config(
        tmp_path / "run",
        *REDUCED,
        f"eval.prompt_sets={{tiny_eval: {{manifest: data_manifests/tiny_eval.yaml, limit: 2}}, "
        f"pickapic_test: {{path: {table}/test.parquet, column: caption}}}}",
        *overrides,
        base=ROOT / "configs" / "tiny_experiment.yaml",
        prompts={"pairs": str(table / "train.parquet")},
    )


def test_the_reduced_experiment_end_to_end_then_resumed(tmp_path):
    child = multiprocessing.get_context("spawn").Process(target=_experiment, args=(tmp_path,))
    child.start()
    child.join(timeout=1200)
    assert child.exitcode == 0, (
        "the experiment or one of its checks failed in the child process (traceback above)"
    )


def _experiment(tmp_path):
    cfg = reduced_config(tmp_path)
    # A method directory that merely exists is not a finished method.
    stray = cfg.output_dir / "experiment" / "methods" / "sum"
    stray.mkdir(parents=True)
    (stray / "notes.txt").write_text("left here by hand")

    prepared = run_experiment(cfg, until="prepare", progress=False)
    assert prepared.parts == {"stage1": "ran"} and prepared.table is None
    # The Diffusion-DPO baseline's pairs are the table's human labels; the others relabel the same images.
    human = pl.read_parquet(
        list((prepared.methods["diffusion_dpo"] / "pairs" / "human").glob("part-*.parquet"))
    )
    assert human.height == 3 and set(human["strategy"]) == {"human"}
    assert set(prepared.label_agreement) == set(METHODS) - {"diffusion_dpo"}
    assert all(0.0 <= v <= 1.0 for v in prepared.label_agreement.values())

    # One method trained as its own job, as on a cluster, from the config file the experiment wrote.
    sum_config = load_config(prepared.configs["sum"])
    assert sum_config.output_dir == prepared.methods["sum"] and sum_config.vote.strategy == "sum"
    assert sum_config.train.model_dump() == {**cfg.train.model_dump(), "strategy": "sum"}
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "accelerate CLI not found next to the Python interpreter"
    subprocess.run(
        [accelerate, "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "trainer/train.py", "--config", str(prepared.configs["sum"])],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True,
    )  # fmt: skip

    out = run_experiment(cfg, progress=False)
    assert out.parts["method:sum"] == "reused"  # found finished, by its settings
    assert all(out.parts[f"method:{m}"] == "ran" for m in METHODS if m != "sum")
    cfgs = {m: load_config(out.configs[m]) for m in METHODS}
    assert (
        cfgs["diffusion_dpo"].train.ref_update.mode == "none"
        and cfgs["diffusion_dpo"].vote.strategy == "human"
    )
    assert (
        cfgs["balanced_dpo"].train.ref_update.mode == "hard"
        and cfgs["balanced_dpo"].vote.strategy == "majority"
    )

    # Two evaluations on one image cache: the head-to-head generates nothing new.
    vs_base, h2h = out.evaluations["base"], out.evaluations["diffusion_dpo"]
    assert {m: r.generated for m, r in vs_base.reuse.items()} == {"base": 4, **{m: 4 for m in METHODS}}
    assert {m: r.generated for m, r in h2h.reuse.items()} == {m: 0 for m in METHODS}
    frame = out.frame
    assert frame is not None and set(frame["baseline"]) == {"base", "diffusion_dpo"}
    assert frame["prompt_set"].unique(maintain_order=True).to_list() == [
        "tiny_eval",
        "pickapic_test",
        "pooled",
    ]
    assert set(frame.filter(pl.col("baseline") == "diffusion_dpo")["run"]) == set(METHODS) - {"diffusion_dpo"}
    md, parquet, png = out.table
    text = md.read_text()
    assert "Protocol: sampler `default`, 3 steps" in text and "pooled majority" in text and "won_all" in text
    assert pl.read_parquet(parquet).equals(frame) and png.read_bytes()[:4] == b"\x89PNG"

    # A rerun redoes nothing: every part is recognised by what defines it.
    finals = {m: (out.methods[m] / "train").rglob("final/weights.json") for m in METHODS}
    mtimes = {m: [p.stat().st_mtime_ns for p in paths] for m, paths in finals.items()}
    again = run_experiment(cfg, progress=False)
    assert set(again.parts.values()) == {"reused"}, again.parts
    assert {m: [p.stat().st_mtime_ns for p in (out.methods[m] / "train").rglob("final/weights.json")]
            for m in METHODS} == mtimes  # fmt: skip
    assert again.frame is not None and again.frame.equals(frame)

    # A changed setting is not mixed with the finished parts: refused, naming it.
    try:
        run_experiment(reduced_config(tmp_path, "train.beta=2000"), progress=False)
    except PartChanged as exc:
        assert "train.beta: 500.0 vs 2000.0" in str(exc)
    else:
        raise AssertionError("a method trained with beta 500 was reused for beta 2000")
