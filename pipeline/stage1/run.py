"""Stage 1 with Ray Data: prompts × seeds → images + final latents → every metric → `<run>/candidates/`.

Python API (the CLI `pipeline/score.py` and the evaluation / online-rounds code call these):

    run_stage1(cfg, *, model_ref=None, model_tag=None, models=None, prompts=None, seeds_per_prompt=None,
               seed_offset=None, seed_scheme=None, round=0, out_dir=None, scorer_factory=None,
               progress=True) -> Stage1Outputs
    generate_and_score(cfg, **same keywords) -> Path          # the candidates directory

- `model_ref`: None → `cfg.model`; a hub id, a local diffusers directory or `tiny/<family>`; or a picklable
  zero-argument callable returning a ready pipeline (base model + tuned UNet/LoRA). A callable needs `model_tag`.
- `model_tag`: the `model` column and part of every `image_id`; defaults to the string `model_ref` or
  `cfg.model.pretrained`. Base and tuned models must have different tags.
- `models`: instead of the two above, several models in one call, tag → reference (what `model_ref` takes):
  the same prompts and seeds for each, one Ray pipeline (the evaluation's base and tuned models).
- `prompts`: None → `cfg.prompts`; a `PromptsSection` (e.g. `cfg.eval.prompts`), a `PromptSet` or a list of str.
- `seeds_per_prompt` / `seed_offset` / `seed_scheme`: default `cfg.generation.num_candidates` / `.seed_offset` /
  `.seed_scheme`; prompt p's k-th image (k < seeds_per_prompt) gets the seed
  `pipeline.schema.noise_seed(p, seed_offset + k, seed_scheme)`: its own noise per prompt (`per_prompt`), or
  `seed_offset + k` for every prompt (`shared`). Every model gets the same seeds: paired comparisons.
- `round`: written to the `round` column (online rounds); `out_dir`: the run directory (default
  `cfg.run.output_dir`); `scorer_factory`: ScorerSpec → scorer (default `scorers.build_scorer`), picklable.

With `cfg.prompts.pairs` set (relabel mode) the images of a Pick-a-Pic-layout pair dataset are scored instead of
generated; the human labels go to `<run>/human_pairs/` for comparison with the vote.

The Ray plan is `pipeline.stage1.ray_plan`; the actors are the plain callables of `pipeline.stage1.batches`; the
writer is `pipeline.stage1.store` in this process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import PromptsSection, RunConfig
from pipeline.console import say
from pipeline.data.prompts import PromptSet
from pipeline.paths import RunPaths
from pipeline.schema import SeedScheme
from pipeline.stage1.batches import ScorerFactory
from pipeline.stage1.identity import image_settings
from pipeline.stage1.plan import (
    ModelRef,
    check_references,
    generation_items,
    relabel_items,
    resolve_model_refs,
    resolve_prompts,
)
from pipeline.stage1.ray_plan import execute
from pipeline.stage1.store import CandidateStore, count_rows, steady_images_per_second


@dataclass
class Stage1Outputs:
    """Where one stage-1 call wrote, and how many rows the tables hold now."""

    run_dir: Path
    candidates_dir: Path
    errors_dir: Path
    manifest: Path
    n_rows: int
    n_errors: int
    n_written: int
    human_pairs_dir: Path | None = None


def run_stage1(
    cfg: RunConfig,
    *,
    model_ref: ModelRef = None,
    model_tag: str | None = None,
    models: Mapping[str, ModelRef] | None = None,
    prompts: PromptsSection | PromptSet | Sequence[str] | None = None,
    seeds_per_prompt: int | None = None,
    seed_offset: int | None = None,
    seed_scheme: SeedScheme | None = None,
    round: int = 0,
    out_dir: str | Path | None = None,
    scorer_factory: ScorerFactory | None = None,
    progress: bool = True,
    stage: str = "stage 1",
) -> Stage1Outputs:
    """Generate (or import) and score every missing candidate; see the module docstring for the arguments.

    `stage` names this call in the progress and summary lines (the evaluation's is `eval`).
    """
    started = time.time()
    paths = RunPaths(Path(out_dir) if out_dir is not None else cfg.output_dir)
    store = CandidateStore(paths, [s.name for s in cfg.scoring.scorers])
    relabel = cfg.prompts.pairs is not None and prompts is None
    human_dir = None
    call: dict[str, Any] = {"mode": "relabel" if relabel else "generate", "round": round}
    refs: dict[str, ModelRef] = {}  # tag → model; none in relabel mode
    rejected = pa.table({})  # relabel mode: imported images that cannot be decoded

    if not relabel:
        refs = resolve_model_refs(cfg, model_ref, model_tag, models)
    # Before anything is read, written or started: what the actors would load, and the table's image settings.
    check_references(cfg, refs, default_scorers=scorer_factory is None)
    scheme = seed_scheme or cfg.generation.seed_scheme
    store.check_settings(image_settings(cfg, refs, relabel, scheme))

    if relabel:
        items, human_dir, stats, rejected = relabel_items(cfg, paths)
        call.update(source=cfg.prompts.pairs, safety_checker="not applicable", prompt_stats=stats)
    else:
        n_seeds = seeds_per_prompt or cfg.generation.num_candidates
        offset = cfg.generation.seed_offset if seed_offset is None else seed_offset
        prompt_set = resolve_prompts(cfg, prompts)
        items = generation_items(prompt_set, list(refs), range(offset, offset + n_seeds), round, scheme)
        call.update(
            model=next(iter(refs)) if len(refs) == 1 else list(refs),
            seeds_per_prompt=n_seeds,
            seed_offset=offset,
            seed_scheme=scheme,
            prompt_set=prompt_set.name,
            prompt_stats=prompt_set.stats,
            safety_checker="off",
        )

    n_planned = items.num_rows
    todo_mask = pa.array([i not in store.done for i in items.column("image_id").to_pylist()], pa.bool_())
    items = items.filter(todo_mask)
    call.update(n_planned=n_planned, n_skipped_existing=n_planned - items.num_rows)

    if items.num_rows or rejected.num_rows:
        store.record_settings()
    if rejected.num_rows:  # relabel mode, quarantine: images that cannot be decoded, set aside before Ray
        store.write(rejected)
    if items.num_rows:
        execute(items, cfg, store, relabel, refs, scorer_factory, progress, stage)

    wall = time.time() - started
    call.update(
        n_written=store.n_written,
        n_errors=store.n_errors,
        n_duplicates_dropped=store.n_duplicates_dropped,
        wall_seconds=round_to(wall),
        images_per_second=round_to((store.n_written + store.n_errors) / wall) if wall else None,
        steady_images_per_second=_maybe_round(steady_images_per_second(store.write_log)),
        generation_images_per_second_per_actor=_rate(store, store.gen_seconds),
        scoring_images_per_second_per_actor=_rate(store, store.score_seconds),
        layout=cfg.scoring.layout,
        generation_workers=cfg.generation.num_workers,
        scoring_workers=cfg.scoring.num_workers,
    )
    manifest = store.write_manifest(call, config=cfg.model_dump(mode="json"))
    quarantined = f", {store.n_errors} quarantined in {store.errors_dir}" if store.n_errors else ""
    say(
        f"{stage}: {store.n_written} new images ({n_planned - items.num_rows} already there){quarantined} "
        f"in {wall:.0f} s → {store.candidates_dir}"
    )
    return Stage1Outputs(
        run_dir=paths.root,
        candidates_dir=store.candidates_dir,
        errors_dir=store.errors_dir,
        manifest=manifest,
        n_rows=count_rows(store.candidates_dir),
        n_errors=count_rows(store.errors_dir),
        n_written=store.n_written,
        human_pairs_dir=human_dir,
    )


def generate_and_score(cfg: RunConfig, **kwargs: Any) -> Path:
    """`run_stage1` for callers that only need the candidates directory (evaluation, online rounds)."""
    return run_stage1(cfg, **kwargs).candidates_dir


def _rate(store: CandidateStore, seconds: float) -> float | None:
    n = store.n_written + store.n_errors
    return round_to(n / seconds) if seconds > 0 else None


def _maybe_round(x: float | None) -> float | None:
    return None if x is None else round_to(x)


def round_to(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}") if x else 0.0
