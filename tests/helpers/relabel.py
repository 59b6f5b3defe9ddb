"""A relabel-mode run directory made by stage 1's own pieces, without Ray: the imported Pick-a-Pic-like table
(`pipeline.testing.pickapic`), its images scored by the colour scorers into `<run>/candidates/`, and its labels in
`<run>/human_pairs/`, exactly as `pipeline.stage1.run_stage1` writes them in relabel mode."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from helpers.configs import run_config
from helpers.stage1_scorers import make_scorer
from pipeline.config import RunConfig
from pipeline.paths import RunPaths
from pipeline.stage1.batches import ScoreBatch
from pipeline.stage1.plan import relabel_items
from pipeline.stage1.store import CandidateStore
from pipeline.testing.pickapic import pickapic_like_table

SCORERS = ("brightness", "redness")


def relabel_run(tmp_path: Path, *overrides: str, base: str | Path | None = None) -> RunConfig:
    """Write the dataset, then stage 1 in relabel mode (import, score, keep the labels); returns the config."""
    dataset = tmp_path / "pickapic_like.parquet"
    pq.write_table(pickapic_like_table(), dataset)
    specs = "[" + ", ".join(f"{{name: {s}}}" for s in SCORERS) + "]"
    cfg = run_config(
        tmp_path / "run", f"prompts={{pairs: {dataset}}}", f"scoring.scorers={specs}", *overrides, base=base
    )
    paths = RunPaths(cfg.output_dir)
    items, _, _ = relabel_items(cfg, paths)
    scored = ScoreBatch(cfg.scoring.scorers, scorer_factory=make_scorer)(items)
    CandidateStore(paths, list(SCORERS)).write(scored)
    return cfg
