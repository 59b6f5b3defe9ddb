"""Stage 1 with Ray Data: prompts × seeds → images + final latents → every metric → `<run>/candidates/`.

Python API (the CLI `pipeline/score.py` and the evaluation / online-rounds code call these):

    run_stage1(cfg, *, model_ref=None, model_tag=None, models=None, prompts=None, seeds_per_prompt=None,
               seed_offset=None, round=0, out_dir=None, scorer_factory=None, progress=True) -> Stage1Outputs
    generate_and_score(cfg, **same keywords) -> Path          # the candidates directory

- `model_ref`: None → `cfg.model`; a hub id, a local diffusers directory or `tiny/<family>`; or a picklable
  zero-argument callable returning a ready pipeline (base model + tuned UNet/LoRA). A callable needs `model_tag`.
- `model_tag`: the `model` column and part of every `image_id`; defaults to the string `model_ref` or
  `cfg.model.pretrained`. Base and tuned models must have different tags.
- `models`: instead of the two above, several models in one call, tag → reference (what `model_ref` takes):
  the same prompts and seeds for each, one Ray pipeline (the evaluation's base and tuned models).
- `prompts`: None → `cfg.prompts`; a `PromptsSection` (e.g. `cfg.eval.prompts`), a `PromptSet` or a list of str.
- `seeds_per_prompt` / `seed_offset`: default `cfg.generation.num_candidates` / `cfg.generation.seed_offset`;
  prompt p gets seeds `seed_offset + k`, k < seeds_per_prompt (the same seeds for every model: paired comparisons).
- `round`: written to the `round` column (online rounds); `out_dir`: the run directory (default
  `cfg.run.output_dir`); `scorer_factory`: ScorerSpec → scorer (default `scorers.build_scorer`), picklable.

With `cfg.prompts.pairs` set (relabel mode) the images of a Pick-a-Pic-layout pair dataset are scored instead of
generated; the human labels go to `<run>/human_pairs/` for comparison with the vote.

Ray is thin here: the actors are the plain callables of `pipeline/stage1_batches.py`, the writer is
`pipeline/stage1_store.py` in this process. Ray Data restarts a killed actor and re-runs its task; the store drops
rows it has already written, so every image lands exactly once.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import PromptsSection, RunConfig
from pipeline.io import write_manifest, write_parquet_atomic
from pipeline.prompts import PromptSet, load_prompts, prompts_from_strings
from pipeline.stage1_batches import (
    GenerateBatch,
    ModelLoader,
    ScoreBatch,
    ScorerFactory,
    ScoringError,
    Stage1Error,
    plan_items,
)
from pipeline.stage1_store import CandidateStore, count_rows, steady_images_per_second

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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


def ensure_ray(num_cpus: int | None = None) -> None:
    """Use a running Ray (a job's `RAY_ADDRESS`, or one the caller started), else start a local one."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    # Workers of a local Ray must import this project even when it is not pip-installed.
    pythonpath = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
    )


def warn_if_short_of_resources(cfg: RunConfig, generating: bool) -> None:
    """Actor pools that the cluster cannot hold wait forever: say so up front (an autoscaler may still add nodes)."""
    import ray

    have = ray.cluster_resources()
    cpus, gpus = _actors_needed(cfg, generating), _gpus_needed(cfg, generating)
    if have.get("CPU", 0) < cpus or have.get("GPU", 0) < gpus:
        warnings.warn(
            f"stage 1 needs {cpus} CPUs and {gpus:g} GPUs for its actor pools (generation.num_workers, "
            f"scoring.num_workers, scoring.layout) but Ray has {have.get('CPU', 0):g} CPUs and "
            f"{have.get('GPU', 0):g} GPUs: it will wait until the cluster grows",
            stacklevel=3,
        )


def _gpus_needed(cfg: RunConfig, generating: bool) -> float:
    specs = cfg.scoring.scorers
    pools = [specs] if cfg.scoring.layout == "chained" else [[s] for s in specs]
    per_pool = [sum(s.num_gpus for s in group) for group in pools if group]
    score = sum(g if g <= 1 else math.ceil(g) for g in per_pool) * cfg.scoring.num_workers
    return score + (cfg.generation.num_workers * cfg.generation.num_gpus if generating else 0.0)


def _actors_needed(cfg: RunConfig, generating: bool) -> int:
    pools = (1 if cfg.scoring.layout == "chained" else len(cfg.scoring.scorers)) if cfg.scoring.scorers else 0
    return (cfg.generation.num_workers if generating else 0) + pools * cfg.scoring.num_workers


def build_dataset(
    items: pa.Table,
    cfg: RunConfig,
    *,
    generating: bool,
    model_refs: Mapping[str, str | ModelLoader | None],
    scorer_factory: ScorerFactory | None,
):
    """The Ray Data plan: work items → GenerateBatch pool → ScoreBatch pool(s). Lazy until iterated.

    `model_refs`: model tag → reference; the items' `model` column picks one per row.
    """
    import ray
    from ray.data import ActorPoolStrategy

    gen, scoring = cfg.generation, cfg.scoring
    step = gen.batch_size
    ds = ray.data.from_arrow([items.slice(i, step) for i in range(0, items.num_rows, step)])
    if generating:
        ds = ds.map_batches(
            GenerateBatch,
            fn_constructor_kwargs={"cfg": cfg, "model_refs": dict(model_refs)},
            batch_size=step,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=gen.num_workers),
            num_gpus=gen.num_gpus,
        )
    specs = list(scoring.scorers)
    if not specs:
        return ds
    groups = [specs] if scoring.layout == "chained" else [[s] for s in specs]
    for group in groups:
        gpus = sum(s.num_gpus for s in group)
        ds = ds.map_batches(
            ScoreBatch,
            fn_constructor_kwargs={
                "specs": group,
                "on_error": scoring.on_error,
                "scorer_factory": scorer_factory,
            },
            batch_size=max(s.batch_size for s in group),
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=scoring.num_workers),
            num_gpus=gpus if gpus <= 1 else math.ceil(gpus),
        )
    return ds


def _resolve_prompts(cfg: RunConfig, prompts: PromptsSection | PromptSet | Sequence[str] | None) -> PromptSet:
    if prompts is None:
        return load_prompts(cfg.prompts)
    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, PromptsSection):
        return load_prompts(prompts)
    return prompts_from_strings(list(prompts))


_WORKER_ERROR = re.compile(r"pipeline\.stage1_batches\.(ScoringError|Stage1Error): (.*)")


def _stage1_error(exc: BaseException) -> Stage1Error | None:
    """The Stage1Error a Ray worker raised: Ray ships it back as text inside its own exception types."""
    if isinstance(exc, Stage1Error):
        return exc
    found = _WORKER_ERROR.findall(str(exc))
    if not found:
        return None
    kind, message = found[-1]
    return (ScoringError if kind == "ScoringError" else Stage1Error)(message)


def run_stage1(
    cfg: RunConfig,
    *,
    model_ref: str | ModelLoader | None = None,
    model_tag: str | None = None,
    models: Mapping[str, str | ModelLoader | None] | None = None,
    prompts: PromptsSection | PromptSet | Sequence[str] | None = None,
    seeds_per_prompt: int | None = None,
    seed_offset: int | None = None,
    round: int = 0,
    out_dir: str | Path | None = None,
    scorer_factory: ScorerFactory | None = None,
    progress: bool = True,
) -> Stage1Outputs:
    """Generate (or import) and score every missing candidate; see the module docstring for the arguments."""
    started = time.time()
    run_dir = Path(out_dir) if out_dir is not None else cfg.output_dir
    store = CandidateStore(run_dir, [s.name for s in cfg.scoring.scorers])
    relabel = cfg.prompts.pairs is not None and prompts is None
    human_dir = None
    call: dict[str, Any] = {"mode": "relabel" if relabel else "generate", "round": round}
    refs: dict[str, str | ModelLoader | None] = {}  # tag → model; none in relabel mode

    if relabel:
        items, human_dir, stats = _relabel_items(cfg, run_dir)
        call.update(source=cfg.prompts.pairs, safety_checker="not applicable", prompt_stats=stats)
    else:
        refs = _model_refs(cfg, model_ref, model_tag, models)
        n_seeds = seeds_per_prompt or cfg.generation.num_candidates
        offset = cfg.generation.seed_offset if seed_offset is None else seed_offset
        prompt_set = _resolve_prompts(cfg, prompts)
        triples = list(prompt_set.table.select("prompt_id", "prompt", "source").iter_rows())
        item_schema = pa.schema(
            [(k, pa.string()) for k in ("image_id", "prompt_id", "prompt", "source", "model")]
            + [("round", pa.int32()), ("seed", pa.int64())]
        )
        items = pa.concat_tables(  # grouped by model: an actor switches models once per model, not per batch
            pa.table(
                plan_items(triples, model_tag=tag, seeds=range(offset, offset + n_seeds), round_=round)
            ).cast(item_schema)
            for tag in refs
        )
        call.update(
            model=next(iter(refs)) if len(refs) == 1 else list(refs),
            seeds_per_prompt=n_seeds,
            seed_offset=offset,
            prompt_set=prompt_set.name,
            prompt_stats=prompt_set.stats,
            safety_checker="off",
        )

    n_planned = items.num_rows
    todo_mask = pa.array([i not in store.done for i in items.column("image_id").to_pylist()], pa.bool_())
    items = items.filter(todo_mask)
    call.update(n_planned=n_planned, n_skipped_existing=n_planned - items.num_rows)

    if items.num_rows:
        _execute(items, cfg, store, relabel, refs, scorer_factory, progress)

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
    return Stage1Outputs(
        run_dir=run_dir,
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


def _execute(
    items: pa.Table,
    cfg: RunConfig,
    store: CandidateStore,
    relabel: bool,
    model_refs: Mapping[str, str | ModelLoader | None],
    scorer_factory: ScorerFactory | None,
    progress: bool,
) -> None:
    from ray.data import DataContext
    from tqdm.auto import tqdm

    ensure_ray(num_cpus=max(os.cpu_count() or 1, _actors_needed(cfg, not relabel) + 1))
    warn_if_short_of_resources(cfg, not relabel)
    DataContext.get_current().enable_progress_bars = progress
    ds = build_dataset(
        items, cfg, generating=not relabel, model_refs=model_refs, scorer_factory=scorer_factory
    )
    bar = tqdm(total=items.num_rows, unit="img", desc="candidates written", disable=not progress)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            bar.update(store.write(batch))
    except Exception as exc:
        inner = _stage1_error(exc)
        if inner is None or inner is exc:
            raise
        raise inner from exc
    finally:
        bar.close()


def _model_refs(
    cfg: RunConfig,
    model_ref: str | ModelLoader | None,
    model_tag: str | None,
    models: Mapping[str, str | ModelLoader | None] | None,
) -> dict[str, str | ModelLoader | None]:
    """Model tag → reference for this call: `models` as given, or the one model of `model_ref` / `model_tag`."""
    if models is not None:
        if model_ref is not None or model_tag is not None:
            raise Stage1Error("give either models= or model_ref= / model_tag=, not both")
        if not models:
            raise Stage1Error("models= is empty: nothing to generate with")
        return dict(models)
    if callable(model_ref) and model_tag is None:
        raise Stage1Error("a model loader callable needs a model_tag (it names the model in image ids)")
    return {model_tag or str(model_ref or cfg.model.pretrained): model_ref}


def _relabel_items(cfg: RunConfig, run_dir: Path) -> tuple[pa.Table, Path, dict[str, Any]]:
    """Relabel mode: the pair dataset's images become candidate rows; its human labels are kept beside them."""
    from pipeline.pickapic import import_pickapic

    assert cfg.prompts.pairs is not None
    candidates, human = import_pickapic(cfg.prompts.pairs)
    human_dir = run_dir / "human_pairs"
    write_parquet_atomic(human, human_dir / "part-0.parquet")
    write_manifest(human_dir, source=cfg.prompts.pairs, n_rows=human.num_rows)
    stats = {"n_pairs": human.num_rows, "n_images": candidates.num_rows}
    return candidates, human_dir, stats


def _rate(store: CandidateStore, seconds: float) -> float | None:
    n = store.n_written + store.n_errors
    return round_to(n / seconds) if seconds > 0 else None


def _maybe_round(x: float | None) -> float | None:
    return None if x is None else round_to(x)


def round_to(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}") if x else 0.0
