"""Evaluation: models against a baseline (the base, or any other model) on the same held-out prompts and seeds.

From Python: `evaluate(cfg, tuned=[...], baseline=...) -> EvalOutputs` (the paths it wrote, and the win-rate
table); the command line is `pipeline/evaluate.py`.

Generation and scoring reuse stage 1 (`pipeline.stage1.run_stage1`: one call and one Ray pipeline for every model
that has images to make) on every configured prompt set, `eval.seeds_per_prompt` seeds from `eval.seed_offset`
(far from the training seeds), so the two images of an item start from identical noise and differ only by the
weights. Images are cached by (prompt, model tag, seed) in `<cache_dir>/candidates/` (default: the eval
directory), so comparisons that share a model and a cache reuse its images (counted in the manifest). The
metrics are `eval.scorers` (default `scoring.scorers`); those that did not vote are reported as held out.

Writes, in the eval directory: `winrates.md` (one table per prompt set and subset, pooled last), `winrates.parquet`
(one row per model × prompt group × statistic), `per_image.parquet` (one row per model × item: both image ids,
every score, every win), `winrates.png` (a panel per prompt group) and `manifest.json`. Every win-rate file and the
manifest carry the protocol (`pipeline.evaluation.protocol`); an eval directory or image cache holding another
protocol's results is refused, not mixed; the win rates also go into the model card (`README.md`) of every
evaluated trainer output. The statistics are `pipeline.evaluation.winrates`, the tables and plot
`pipeline.evaluation.tables`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.config import RunConfig, derive_config
from pipeline.console import say
from pipeline.evaluation import cache, protocol, tables, winrates
from pipeline.evaluation.models import EvalError, TunedModel, model_reference, parse_tuned, tuned_tag
from pipeline.evaluation.prompt_sets import POOLED, EvalPromptSets, load_eval_prompt_sets
from pipeline.io import write_manifest
from pipeline.paths import RunPaths
from pipeline.reporting.model_card import CardEvaluation, write_model_card
from pipeline.schema import SCORE_PREFIX
from pipeline.stage1 import run_stage1
from pipeline.stage1.batches import ScorerFactory
from trainer.export import final_weights_dir


@dataclass
class EvalOutputs:
    """Where an evaluation wrote, its win-rate table, its protocol and how many images it reused."""

    eval_dir: Path
    candidates_dir: Path
    markdown: Path
    table: Path
    per_image: Path
    plot: Path
    manifest: Path
    frame: pl.DataFrame = field(repr=False)
    protocol: dict[str, Any] = field(default_factory=dict, repr=False)
    reuse: dict[str, cache.Reuse] = field(default_factory=dict)

    def paths(self) -> dict[str, Path]:
        return {
            "win rates (Markdown)": self.markdown,
            "win rates (Parquet)": self.table,
            "per-image results": self.per_image,
            "plot": self.plot,
            "eval images and scores": self.candidates_dir,
            "manifest": self.manifest,
        }


def load_evaluation(eval_dir: str | Path) -> EvalOutputs:
    """A finished evaluation read back from its directory (tables, protocol, image counts), nothing recomputed."""
    eval_dir = Path(eval_dir)
    manifest = json.loads((eval_dir / "manifest.json").read_text())
    table = eval_dir / "winrates.parquet"
    return EvalOutputs(
        eval_dir=eval_dir,
        candidates_dir=Path(manifest["image_cache"]),
        markdown=eval_dir / "winrates.md",
        table=table,
        per_image=eval_dir / "per_image.parquet",
        plot=eval_dir / "winrates.png",
        manifest=eval_dir / "manifest.json",
        frame=pl.read_parquet(table),
        protocol=protocol.read_parquet_protocol(table),
        reuse={name: cache.Reuse(**counts) for name, counts in manifest.get("images", {}).items()},
    )


def as_model(model: TunedModel | str | Path) -> TunedModel:
    return model if isinstance(model, TunedModel) else parse_tuned(str(model))


def vote_metrics(cfg: RunConfig) -> list[str]:
    """The metrics the training vote used: `vote.metrics`, else every scorer of stage 1."""
    return list(cfg.vote.metrics or [s.name for s in cfg.scoring.scorers])


def eval_config(cfg: RunConfig) -> RunConfig:
    """The config stage 1 runs the evaluation with: the judging metrics are `eval.scorers` when given."""
    if cfg.eval.scorers is None:
        return cfg
    return derive_config(cfg, **{"scoring.scorers": [s.model_dump(mode="json") for s in cfg.eval.scorers]})


def paired(baseline: pl.DataFrame, model: pl.DataFrame, run: str, metrics: list[str]) -> pl.DataFrame:
    """The baseline's and the model's rows of the same (prompt, seed) side by side, with every metric's win
    (of the model over the baseline) and the balance outcomes of each item."""
    joined = baseline.join(model.drop("prompt"), on=["prompt_id", "seed"], how="inner", suffix="_model")
    joined = joined.rename(
        {"image_id": "image_id_baseline"} | {SCORE_PREFIX + m: f"{m}_baseline" for m in metrics}
    )
    joined = joined.rename({f"{SCORE_PREFIX}{m}_model": f"{m}_model" for m in metrics})
    per_metric = (
        np.stack(
            [
                winrates.wins(joined[f"{m}_model"].to_numpy(), joined[f"{m}_baseline"].to_numpy())
                for m in metrics
            ]
        )
        if len(joined)
        else np.zeros((len(metrics), 0))
    )
    extra = {f"win_{m}": per_metric[i] for i, m in enumerate(metrics)}
    extra["win_majority"] = winrates.majority_wins(per_metric)
    extra["won_all"] = winrates.won_on_every_metric(per_metric)
    extra["lost_all"] = winrates.lost_on_every_metric(per_metric)
    head = ["run", "prompt_id", "prompt", "seed", "image_id_model", "image_id_baseline"]
    return (
        joined.with_columns(pl.lit(run).alias("run"), *[pl.Series(k, v) for k, v in extra.items()])
        .sort("prompt_id", "seed")
        .select(*head, pl.exclude(*head))
    )


def group_rates(
    rows: pl.DataFrame,
    membership: pl.DataFrame,
    metrics: list[str],
    cfg: RunConfig,
    seed: int,
) -> list[tuple[str, winrates.WinRate]]:
    """Every statistic of one comparison, for each prompt group (set, subset, pooled) its items belong to."""
    out = []
    ev = cfg.eval
    for group in membership["group"].unique(maintain_order=True).to_list():
        ids = membership.filter(pl.col("group") == group)["prompt_id"]
        sub = rows.filter(pl.col("prompt_id").is_in(ids.implode()))
        if sub.is_empty():
            continue
        rates = winrates.win_rates(
            rows["run"][0],
            {m: sub[f"{m}_model"].to_numpy() for m in metrics},
            {m: sub[f"{m}_baseline"].to_numpy() for m in metrics},
            samples=ev.bootstrap_samples,
            confidence=ev.confidence,
            seed=seed,
            clusters=sub["prompt_id"].to_numpy() if ev.bootstrap_unit == "prompt" else None,
        )
        out += [(group, r) for r in rates]
    return out


def rates_frame(
    labelled: list[tuple[str, winrates.WinRate]], baseline: str, held_out: list[str]
) -> pl.DataFrame:
    """The long table: run, baseline, prompt_set, metric, held_out, win_rate, ci_low, ci_high, n, n_clusters."""
    frame = winrates.to_frame([r for _, r in labelled])
    return frame.select(
        "run",
        pl.lit(baseline).alias("baseline"),
        pl.Series("prompt_set", [g for g, _ in labelled], dtype=pl.String),
        "metric",
        pl.col("metric").is_in(held_out).alias("held_out"),
        pl.exclude("run", "metric"),
    )


def check_eval_dir(eval_dir: Path, expected: dict[str, Any]) -> None:
    """An evaluation directory holding another protocol's tables is not overwritten: they stay comparable."""
    manifest = eval_dir / "manifest.json"
    if manifest.is_file():
        found = json.loads(manifest.read_text()).get("protocol")
        if found is not None:
            protocol.check_same(
                found, expected, f"{eval_dir} already holds an evaluation (its protocol vs this one's; "
                f"choose another --out-dir to keep both, or delete it)"
            )  # fmt: skip


def resolve_sides(
    cfg: RunConfig, tuned: Sequence[TunedModel | str | Path] | None, baseline: TunedModel | str | None
) -> tuple[list[TunedModel], TunedModel]:
    """The models to evaluate (default: this run's `train.strategy` weights) and the baseline, names checked."""
    if tuned is None:
        paths = RunPaths(cfg.output_dir)
        tuned = [TunedModel(cfg.train.strategy, weights_dir=final_weights_dir(paths, cfg.train.strategy))]
    models = [as_model(m) for m in tuned]
    opponent = as_model(baseline if baseline is not None else cfg.eval.baseline)
    names = [m.name for m in models]
    if not models or len(set(names)) != len(names) or opponent.name in names:
        raise EvalError(
            f"need at least one model, with distinct names other than the baseline's ({opponent.name!r}); got {names}"
        )
    return models, opponent


def generate_missing(
    cfg: RunConfig,
    ecfg: RunConfig,
    everyone: list[TunedModel],
    prompt_sets: EvalPromptSets,
    store: RunPaths,
    scorer_factory: ScorerFactory | None,
    progress: bool,
) -> tuple[dict[str, str], dict[str, set[str]], dict[str, cache.Reuse]]:
    """Plan every model's images, make only those the cache lacks (one stage-1 call), count what was reused.

    Returns the models' tags, their planned image ids and the reuse counts, by model name.
    """
    tags = {m.name: tuned_tag(m, cfg) for m in everyone}
    seeds = range(cfg.eval.seed_offset, cfg.eval.seed_offset + cfg.eval.seeds_per_prompt)
    prompt_ids = prompt_sets.union.table["prompt_id"].to_list()
    scheme = cfg.eval.seed_scheme
    planned = {m.name: cache.planned_ids(tags[m.name], prompt_ids, seeds, scheme) for m in everyone}
    before = cache.cached_ids(store)
    missing = {tags[m.name]: model_reference(m, cfg) for m in everyone if planned[m.name] - before}
    if missing:
        run_stage1(
            ecfg,
            models=missing,
            prompts=prompt_sets.union,
            seeds_per_prompt=cfg.eval.seeds_per_prompt,
            seed_offset=cfg.eval.seed_offset,
            seed_scheme=scheme,
            out_dir=store.root,
            scorer_factory=scorer_factory,
            progress=progress,
            stage="eval",
        )
    return tags, planned, cache.count_reuse(planned, before, cache.cached_ids(store))


def describe_intervals(cfg: RunConfig, opponent: TunedModel, held_out: list[str]) -> str:
    """The line under a table's title: what the baseline is, how the intervals were made, what is held out."""
    unit = "prompts (all seeds of a prompt together)" if cfg.eval.bootstrap_unit == "prompt" else "items"
    notes = (
        f"Baseline `{opponent.name}` ({opponent.kind}); base model `{cfg.model.pretrained}`. "
        f"{cfg.eval.confidence:.0%} intervals from {cfg.eval.bootstrap_samples} bootstrap resamples of {unit}."
    )
    if held_out:
        notes += f" Held out (did not vote in training): {', '.join(held_out)}."
    return notes


def evaluate(
    cfg: RunConfig,
    tuned: Sequence[TunedModel | str | Path] | None = None,
    *,
    baseline: TunedModel | str | None = None,
    out_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    scorer_factory: ScorerFactory | None = None,
    progress: bool = True,
    title: str | None = None,
) -> EvalOutputs:
    """Generate what is missing, score, and compare each model with `baseline` (default `eval.baseline`).

    `tuned` None → the final weights of `train.strategy` in this run. `cache_dir` holds the images
    (`<cache_dir>/candidates/`; default: the eval directory); evaluations sharing it reuse each other's images.
    """
    started = time.time()
    eval_dir = Path(out_dir) if out_dir is not None else RunPaths(cfg.output_dir).eval
    store = RunPaths(Path(cache_dir) if cache_dir is not None else eval_dir)
    models, opponent = resolve_sides(cfg, tuned, baseline)
    ecfg = eval_config(cfg)
    metrics = [s.name for s in ecfg.scoring.scorers]
    if not metrics:
        raise EvalError("no metrics to compare with: scoring.scorers (or eval.scorers) is empty")
    held_out = [m for m in metrics if m not in vote_metrics(cfg)]
    prompt_sets = load_eval_prompt_sets(cfg.eval.named_prompt_sets())
    proto = protocol.evaluation_protocol(ecfg, prompt_sets.sets, ecfg.scoring.scorers)
    proto["held_out_metrics"] = held_out
    check_eval_dir(eval_dir, proto)
    protocol.check_image_cache(ecfg, store.candidates / "manifest.json")

    everyone = [opponent, *models]
    tags, planned, reuse = generate_missing(cfg, ecfg, everyone, prompt_sets, store, scorer_factory, progress)
    scores = cache.read_model_scores(
        store.candidates, {tags[m.name]: planned[m.name] for m in everyone}, metrics
    )
    per_image, labelled = [], []
    for i, model in enumerate(models):
        rows = paired(scores[tags[opponent.name]], scores[tags[model.name]], model.name, metrics)
        if rows.is_empty():
            raise EvalError(
                f"model {model.name!r}: no (prompt, seed) item has images of both it and {opponent.name!r}"
            )
        per_image.append(rows.with_columns(pl.lit(opponent.name).alias("baseline")))
        labelled += group_rates(rows, prompt_sets.membership, metrics, cfg, seed=cfg.run.seed + i)
    frame = rates_frame(labelled, opponent.name, held_out)
    heading = title or (
        "Win rate over the base" if opponent.is_base else f"Win rate over {opponent.name} (head to head)"
    )
    notes = describe_intervals(cfg, opponent, held_out)
    outputs = EvalOutputs(
        eval_dir=eval_dir,
        candidates_dir=store.candidates,
        markdown=tables.write_markdown(
            eval_dir / "winrates.md", frame, title=heading, notes=notes, protocol=proto
        ),
        table=tables.write_parquet(eval_dir / "winrates.parquet", frame, protocol=proto),
        per_image=tables.write_parquet(eval_dir / "per_image.parquet", pl.concat(per_image), protocol=proto),
        plot=tables.plot(eval_dir / "winrates.png", frame, title=heading),
        manifest=write_manifest(
            eval_dir,
            protocol=proto,
            config=cfg.model_dump(mode="json"),
            baseline={"name": opponent.name, "tag": tags[opponent.name], **opponent.describe()},
            models={m.name: {"tag": tags[m.name], **m.describe()} for m in models},
            metrics=metrics,
            held_out_metrics=held_out,
            image_cache=str(store.candidates),
            images={name: asdict(r) for name, r in reuse.items()},
            n_items={m.name: int(r.height) for m, r in zip(models, per_image, strict=True)},
            wall_seconds=round(time.time() - started, 2),
        ),
        frame=frame,
        protocol=proto,
        reuse=reuse,
    )
    if opponent.is_base:
        refresh_model_cards(cfg, models, frame)
    say_summary(outputs, opponent.name)
    return outputs


def say_summary(outputs: EvalOutputs, baseline: str) -> None:
    """One line per model: its majority win rate over the baseline on every item (the pooled group if several)."""
    majority = outputs.frame.filter(pl.col("metric") == winrates.MAJORITY)
    groups = majority["prompt_set"].unique(maintain_order=True).to_list()
    overall = POOLED if POOLED in groups else groups[-1]
    for row in majority.filter(pl.col("prompt_set") == overall).iter_rows(named=True):
        say(
            f"eval: {row['run']} over {baseline} on {row['n']} items, majority win rate {row['win_rate']:.3f} "
            f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}] → {outputs.markdown}"
        )


def card_evaluation(cfg: RunConfig, run: str, frame: pl.DataFrame) -> CardEvaluation:
    """One evaluated model's rows of the win-rate table, with what a model card says about how they were made."""
    sets = ", ".join(f"`{name}`" for name in cfg.eval.named_prompt_sets())
    return CardEvaluation(
        run=run,
        rows=frame.filter(pl.col("run") == run).to_dicts(),
        compared_with=f"the base model `{cfg.model.pretrained}`",
        prompts=sets or "–",
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
