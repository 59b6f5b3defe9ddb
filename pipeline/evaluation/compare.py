"""Evaluation: the base model and each tuned model on the same held-out prompts and seeds, scored by every metric.

From Python: `evaluate(cfg, tuned=[...]) -> EvalOutputs` (the paths it wrote, and the win-rate table); the
command line is `pipeline/evaluate.py`.

Generation and scoring reuse stage 1 (`pipeline.stage1.run_stage1`: one call and one Ray pipeline for the base and
every tuned model) with `eval.prompts`, `eval.seeds_per_prompt` seeds from `eval.seed_offset` (far from the
training seeds), so base and tuned images of one item start from identical noise and differ only by the weights.
All images land in `<eval dir>/candidates/` (default `<run>/eval/`), told apart by the `model` column; a rerun
skips images already there.

Writes, in the eval directory: `winrates.md` (runs side by side), `winrates.parquet` (one row per run × metric),
`per_image.parquet` (one row per run × item: both image ids, every score, every win), `winrates.png` (per-metric
bars with CIs, runs grouped) and `manifest.json`; and the win rates into the model card (`README.md`) of every
evaluated trainer output. The statistics are `pipeline.evaluation.winrates`, the tables and
plot `pipeline.evaluation.tables`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.config import RunConfig
from pipeline.console import say
from pipeline.evaluation import tables, winrates
from pipeline.evaluation.models import (
    EvalError,
    TunedLoader,
    TunedModel,
    base_tag,
    parse_tuned,
    tuned_tag,
)
from pipeline.io import write_manifest
from pipeline.paths import RunPaths, table_files
from pipeline.reporting.model_card import CardEvaluation, write_model_card
from pipeline.schema import SCORE_PREFIX
from pipeline.stage1 import run_stage1
from pipeline.stage1.batches import ScorerFactory
from trainer.export import final_weights_dir


@dataclass
class EvalOutputs:
    """Where an evaluation wrote, and its win-rate table (one row per run × metric)."""

    eval_dir: Path
    candidates_dir: Path
    markdown: Path
    table: Path
    per_image: Path
    plot: Path
    manifest: Path
    frame: pl.DataFrame = field(repr=False)

    def paths(self) -> dict[str, Path]:
        return {
            "win rates (Markdown)": self.markdown,
            "win rates (Parquet)": self.table,
            "per-image results": self.per_image,
            "plot": self.plot,
            "eval images and scores": self.candidates_dir,
            "manifest": self.manifest,
        }


def _generate(cfg: RunConfig, eval_dir: Path, models: dict[str, Any], scorer_factory, progress: bool) -> None:
    """Every model's images in one stage-1 call (one Ray pipeline; each model loaded once per actor)."""
    if cfg.eval.prompts is None:
        raise EvalError("eval.prompts is not set: evaluation needs held-out prompts (a manifest or a file)")
    run_stage1(
        cfg,
        models=models,
        prompts=cfg.eval.prompts,
        seeds_per_prompt=cfg.eval.seeds_per_prompt,
        seed_offset=cfg.eval.seed_offset,
        out_dir=eval_dir,
        scorer_factory=scorer_factory,
        progress=progress,
        stage="eval",
    )


def read_scores(candidates_dir: Path, tag: str, metrics: list[str]) -> pl.DataFrame:
    """One model's eval rows: item keys, image id and every score column; an error if the model has none.

    An image id is deterministic (prompt, model tag, seed), so a row written twice (two evaluations of one
    directory at once) is the same image: it is kept once, never counted as two items.
    """
    files = table_files(candidates_dir)
    if not files:
        raise EvalError(f"no candidate files in {candidates_dir}")
    frame = (
        pl.scan_parquet(files)
        .filter(pl.col("model") == tag)
        .select("prompt_id", "prompt", "seed", "image_id", *[SCORE_PREFIX + m for m in metrics])
        .unique(subset="image_id", keep="first", maintain_order=True)
        .collect()
    )
    if frame.is_empty():
        raise EvalError(f"no images of model {tag!r} in {candidates_dir}")
    return frame


def paired(base: pl.DataFrame, tuned: pl.DataFrame, run: str, metrics: list[str]) -> pl.DataFrame:
    """Base and tuned rows of the same (prompt, seed) side by side, with every metric's win and the majority."""
    joined = base.join(tuned.drop("prompt"), on=["prompt_id", "seed"], how="inner", suffix="_tuned")
    joined = joined.rename({"image_id": "image_id_base"} | {SCORE_PREFIX + m: f"{m}_base" for m in metrics})
    joined = joined.rename({f"{SCORE_PREFIX}{m}_tuned": f"{m}_tuned" for m in metrics})
    per_metric = (
        np.stack(
            [winrates.wins(joined[f"{m}_tuned"].to_numpy(), joined[f"{m}_base"].to_numpy()) for m in metrics]
        )
        if len(joined)
        else np.zeros((len(metrics), 0))
    )
    extra = {f"win_{m}": per_metric[i] for i, m in enumerate(metrics)}
    extra["win_majority"] = winrates.majority_wins(per_metric)
    return (
        joined.with_columns(pl.lit(run).alias("run"), *[pl.Series(k, v) for k, v in extra.items()])
        .sort("prompt_id", "seed")
        .select(
            "run",
            "prompt_id",
            "prompt",
            "seed",
            "image_id_base",
            "image_id_tuned",
            pl.exclude("run", "prompt_id", "prompt", "seed", "image_id_base", "image_id_tuned"),
        )
    )


def evaluate(
    cfg: RunConfig,
    tuned: Sequence[TunedModel | str | Path] | None = None,
    *,
    out_dir: str | Path | None = None,
    scorer_factory: ScorerFactory | None = None,
    progress: bool = True,
    title: str = "Win rate of tuned over base",
) -> EvalOutputs:
    """Generate, score and compare; `tuned` None → the final weights of `train.strategy` in this run."""
    started = time.time()
    paths = RunPaths(cfg.output_dir)
    eval_dir = Path(out_dir) if out_dir is not None else paths.eval
    if tuned is None:
        tuned = [TunedModel(cfg.train.strategy, weights_dir=final_weights_dir(paths, cfg.train.strategy))]
    models = [m if isinstance(m, TunedModel) else parse_tuned(str(m)) for m in tuned]
    names = [m.name for m in models]
    if not models or len(set(names)) != len(names):
        raise EvalError(f"need at least one tuned model, with distinct names; got {names}")
    metrics = [s.name for s in cfg.scoring.scorers]
    if not metrics:
        raise EvalError("scoring.scorers is empty: there is nothing to compare the models with")

    tags = {model.name: tuned_tag(model) for model in models}
    refs: dict[str, Any] = {base_tag(cfg): None}
    for model in models:
        if model.pipeline_dir is not None:
            refs[tags[model.name]] = str(model.pipeline_dir)
        else:
            refs[tags[model.name]] = TunedLoader(model.base or cfg.model, str(model.weights_dir))
    _generate(cfg, eval_dir, refs, scorer_factory, progress)

    candidates_dir = eval_dir / "candidates"
    base = read_scores(candidates_dir, base_tag(cfg), metrics)
    per_image, rates = [], []
    for i, model in enumerate(models):
        rows = paired(base, read_scores(candidates_dir, tags[model.name], metrics), model.name, metrics)
        if rows.is_empty():
            raise EvalError(f"run {model.name!r}: no (prompt, seed) item has both a base and a tuned image")
        per_image.append(rows)
        rates += winrates.win_rates(
            model.name,
            {m: rows[f"{m}_tuned"].to_numpy() for m in metrics},
            {m: rows[f"{m}_base"].to_numpy() for m in metrics},
            samples=cfg.eval.bootstrap_samples,
            confidence=cfg.eval.confidence,
            seed=cfg.run.seed + i,
        )
    frame = winrates.to_frame(rates)
    level = f"{cfg.eval.confidence:.0%}"
    outputs = EvalOutputs(
        eval_dir=eval_dir,
        candidates_dir=candidates_dir,
        markdown=tables.write_markdown(
            eval_dir / "winrates.md",
            frame,
            title=title,
            notes=f"Base `{cfg.model.pretrained}`; {level} intervals from {cfg.eval.bootstrap_samples} "
            f"bootstrap resamples of the items.",
        ),
        table=tables.write_parquet(eval_dir / "winrates.parquet", frame),
        per_image=tables.write_parquet(eval_dir / "per_image.parquet", pl.concat(per_image)),
        plot=tables.plot(eval_dir / "winrates.png", frame, title=title),
        manifest=write_manifest(
            eval_dir,
            config=cfg.model_dump(mode="json"),
            base=base_tag(cfg),
            tuned={
                m.name: {"tag": tags[m.name], "weights": str(m.weights_dir or m.pipeline_dir)} for m in models
            },
            metrics=metrics,
            n_items={m.name: int(r.height) for m, r in zip(models, per_image, strict=True)},
            wall_seconds=round(time.time() - started, 2),
        ),
        frame=frame,
    )
    refresh_model_cards(cfg, models, frame)
    for row in frame.filter(pl.col("metric") == winrates.MAJORITY).iter_rows(named=True):
        say(
            f"eval: {row['run']} over the base on {row['n']} items, majority win rate {row['win_rate']:.3f} "
            f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}] → {outputs.markdown}"
        )
    return outputs


def card_evaluation(cfg: RunConfig, run: str, frame: pl.DataFrame) -> CardEvaluation:
    """One evaluated model's rows of the win-rate table, with what a model card says about how they were made."""
    prompts = cfg.eval.prompts
    source = (prompts.manifest or prompts.path or "–") if prompts is not None else "–"
    return CardEvaluation(
        run=run,
        rows=frame.filter(pl.col("run") == run).to_dicts(),
        compared_with=f"the base model `{cfg.model.pretrained}`",
        prompts=f"`{source}`" + (f", first {prompts.limit}" if prompts is not None and prompts.limit else ""),
        seeds_per_prompt=cfg.eval.seeds_per_prompt,
        confidence=cfg.eval.confidence,
        bootstrap_samples=cfg.eval.bootstrap_samples,
    )


def refresh_model_cards(cfg: RunConfig, models: Sequence[TunedModel], frame: pl.DataFrame) -> list[Path]:
    """Each evaluated trainer output's model card, rewritten with its win rates (trainer outputs only)."""
    written = []
    for model in models:
        weights = model.weights_dir
        if weights is None or not (weights.parent / "manifest.json").is_file():
            continue  # not `train/<strategy>/final/`: no training manifest to describe it
        card = card_evaluation(cfg, model.name, frame)
        written.append(write_model_card(weights, weights.parent, evaluation=card))
    return written
