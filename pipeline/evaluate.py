"""Evaluation: the base model and each tuned model on the same held-out prompts and seeds, scored by every metric.

    python -m pipeline.evaluate --config configs/tiny.yaml                      # base vs train.strategy's weights
    python -m pipeline.evaluate --config configs/tiny.yaml --tuned runs/tiny/train/majority/final \\
        --tuned sum=runs/tiny/train/sum/final --tuned static=runs/static/train/majority/final

From Python: `evaluate(cfg, tuned=[...]) -> EvalOutputs` (the paths it wrote, and the win-rate table).

Generation and scoring reuse stage 1 (`pipeline.stage1.run_stage1`: one call and one Ray pipeline for the base and
every tuned model) with `eval.prompts`, `eval.seeds_per_prompt` seeds from `eval.seed_offset` (far from the
training seeds), so base and tuned images of one item start from identical noise and differ only by the weights. All images land in `<eval dir>/candidates/` (default
`<run>/eval/`), told apart by the `model` column; a rerun skips images already there. A tuned model's tag includes
a fingerprint of its weight files, so retrained weights are never mistaken for cached images.

Writes, in the eval directory: `winrates.md` (runs side by side), `winrates.parquet` (one row per run × metric),
`per_image.parquet` (one row per run × item: both image ids, every score, every win), `winrates.png` (per-metric
bars with CIs, runs grouped) and `manifest.json`. The statistics are `pipeline/winrates.py`.
"""

from __future__ import annotations

if __package__ in (
    None,
    "",
):  # `python pipeline/evaluate.py`: make the project importable without installing it
    import sys
    from pathlib import Path as _Path

    sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline import winrates
from pipeline.config import ModelSection, RunConfig, add_config_arguments, load_config
from pipeline.io import write_manifest
from pipeline.schema import SCORE_PREFIX
from pipeline.stage1 import run_stage1
from pipeline.stage1_batches import ScorerFactory
from pipeline.stage1_store import PART_GLOB


class EvalError(RuntimeError):
    """Evaluation cannot run or its tables do not line up; the message names the run, model or directory."""


@dataclass(frozen=True)
class TunedModel:
    """One model to compare with the base: a label for the tables, and a trainer output directory.

    `weights_dir` holds `weights.json` plus a UNet or LoRA (`trainer/export.py`); `base` is the model they apply
    to (default: the config's model). A local diffusers directory can be given instead as `pipeline_dir`.
    """

    name: str
    weights_dir: Path | None = None
    base: ModelSection | None = None
    pipeline_dir: Path | None = None

    def __post_init__(self) -> None:
        if (self.weights_dir is None) == (self.pipeline_dir is None):
            raise EvalError(f"tuned model {self.name!r}: give exactly one of weights_dir or pipeline_dir")


class TunedLoader:
    """Picklable zero-argument loader for a stage-1 actor: the base pipeline with tuned weights applied."""

    def __init__(self, base: ModelSection, weights_dir: str) -> None:
        self.base, self.weights_dir = base, weights_dir

    def __call__(self):
        from trainer.export import load_tuned_pipeline

        return load_tuned_pipeline(self.base, self.weights_dir)


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


def fingerprint(directory: str | Path) -> str:
    """A short id of a weights directory's files (names, sizes, modification times): changes when retrained."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EvalError(f"weights directory not found: {directory}")
    h = hashlib.sha1()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        stat = path.stat()
        h.update(f"{path.relative_to(directory)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:10]


def parse_tuned(spec: str) -> TunedModel:
    """`NAME=DIR` or `DIR` (named after the directory's parent, e.g. `majority` for train/majority/final)."""
    name, sep, path = spec.partition("=")
    if not sep:
        path = spec
        name = Path(spec).resolve().parent.name if Path(spec).name == "final" else Path(spec).name
    p = Path(path)
    if (p / "model_index.json").is_file():
        return TunedModel(name, pipeline_dir=p)
    return TunedModel(name, weights_dir=p)


def base_tag(cfg: RunConfig) -> str:
    return f"base:{cfg.model.pretrained}"


def tuned_tag(model: TunedModel) -> str:
    directory = model.weights_dir if model.weights_dir is not None else model.pipeline_dir
    assert directory is not None
    return f"tuned:{model.name}:{fingerprint(directory)}"


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
    )


def read_scores(candidates_dir: Path, tag: str, metrics: list[str]) -> pl.DataFrame:
    """One model's eval rows: item keys, image id and every score column; an error if the model has none.

    An image id is deterministic (prompt, model tag, seed), so a row written twice (two evaluations of one
    directory at once) is the same image: it is kept once, never counted as two items.
    """
    files = sorted(candidates_dir.glob(PART_GLOB))
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
    from trainer.export import final_weights_dir

    started = time.time()
    eval_dir = Path(out_dir) if out_dir is not None else cfg.output_dir / "eval"
    if tuned is None:
        tuned = [
            TunedModel(cfg.train.strategy, weights_dir=final_weights_dir(cfg.output_dir, cfg.train.strategy))
        ]
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
        markdown=winrates.write_markdown(
            eval_dir / "winrates.md",
            frame,
            title=title,
            notes=f"Base `{cfg.model.pretrained}`; {level} intervals from {cfg.eval.bootstrap_samples} "
            f"bootstrap resamples of the items.",
        ),
        table=winrates.write_parquet(eval_dir / "winrates.parquet", frame),
        per_image=winrates.write_parquet(eval_dir / "per_image.parquet", pl.concat(per_image)),
        plot=winrates.plot(eval_dir / "winrates.png", frame, title=title),
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
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--tuned",
        action="append",
        default=None,
        metavar="[NAME=]DIR",
        help="a trainer final/ directory or a diffusers directory (repeatable); default: train.strategy's",
    )
    parser.add_argument("--out-dir", default=None, help="evaluation directory (default <run>/eval)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    out = evaluate(cfg, args.tuned, out_dir=args.out_dir, progress=not args.no_progress)
    print(winrates.side_by_side(out.frame))
    for what, path in out.paths().items():
        print(f"[eval] {what}: {path}")
    print(
        json.dumps(
            {r["run"]: r["win_rate"] for r in out.frame.filter(pl.col("metric") == "majority").to_dicts()}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
