"""The Ray part of stage 1, kept thin: a local or attached cluster, the actor pools, and the stream of batches.

The plan is one Ray Data pipeline: work items → `GenerateBatch` actor pool (skipped in relabel mode) → one
`ScoreBatch` pool with every scorer chained, or one pool per scorer (`scoring.layout: separate`) → batches
streamed back to this process, where `CandidateStore` writes them. `scoring.layout: fused` puts the scorers inside
the generation actors (`GenerateAndScoreBatch`): one pool, one process per worker. Ray Data restarts a killed actor
and re-runs its task; the store drops rows it has already written, so every image lands exactly once.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from pipeline.config import RunConfig, ScorerSpec
from pipeline.console import Progress
from pipeline.stage1.batches import GenerateAndScoreBatch, GenerateBatch, ScoreBatch, ScorerFactory
from pipeline.stage1.errors import find_stage1_error
from pipeline.stage1.plan import InputError, ModelRef
from pipeline.stage1.store import CandidateStore

PROJECT_ROOT = Path(__file__).resolve().parents[2]


_LOCAL_CLUSTER: str | None = None  # GCS address of the Ray this process started itself


def ensure_ray(num_cpus: int | None = None) -> None:
    """Use a running Ray (a job's `RAY_ADDRESS`, or one the caller started), else start a local one."""
    import ray

    global _LOCAL_CLUSTER
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
    _LOCAL_CLUSTER = ray.get_runtime_context().gcs_address


def started_here() -> bool:
    """Whether the connected Ray is the local one this process started: a fixed cluster that never grows."""
    import ray

    return _LOCAL_CLUSTER is not None and ray.get_runtime_context().gcs_address == _LOCAL_CLUSTER


def check_resources(cfg: RunConfig, generating: bool) -> None:
    """Actor pools that the cluster cannot hold wait forever: refuse on a local Ray, warn on an attached one.

    A local Ray started here never grows, so a shortfall (e.g. `generation.num_gpus: 1` on a machine without a GPU)
    is an error now. An attached cluster (`RAY_ADDRESS`, or a Ray the caller started) may have an autoscaler that
    adds nodes: there stage 1 says what it waits for and waits.
    """
    import ray

    have = ray.cluster_resources()
    cpus, gpus = _actors_needed(cfg, generating), _gpus_needed(cfg, generating)
    if have.get("CPU", 0) >= cpus and have.get("GPU", 0) >= gpus:
        return
    need = (
        f"stage 1 needs {cpus} CPUs and {gpus:g} GPUs for its actor pools (generation.num_workers × "
        f"generation.num_gpus, scoring.num_workers × the scorers' num_gpus, scoring.layout) but Ray has "
        f"{have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs"
    )
    if started_here():
        raise InputError(
            f"{need}, and the local Ray started for this run cannot grow: set the num_gpus keys to 0 to run on "
            "CPUs, or submit to a cluster with GPUs (RAY_ADDRESS)"
        )
    warnings.warn(
        f"{need}: waiting for the cluster's autoscaler to add nodes (a cluster without one never returns; "
        "stop the job and lower the request)",
        stacklevel=3,
    )


def _fused(cfg: RunConfig, generating: bool) -> bool:
    """Scorers inside the generation actors: `layout: fused` when there is a generation pool to hold them."""
    return generating and cfg.scoring.layout == "fused" and bool(cfg.scoring.scorers)


def _scoring_pools(cfg: RunConfig, generating: bool) -> list[list[ScorerSpec]]:
    """The scorer groups that get a pool of their own (none when fused into generation; `scoring.num_workers`
    actors each)."""
    specs = list(cfg.scoring.scorers)
    if not specs or _fused(cfg, generating):
        return []
    return [[s] for s in specs] if cfg.scoring.layout == "separate" else [specs]


def _pool_gpus(gpus: float) -> float:
    """A fraction of one GPU may be shared; more than one is whole GPUs."""
    return gpus if gpus <= 1 else math.ceil(gpus)


def _fused_actor_gpus(cfg: RunConfig) -> float:
    return _pool_gpus(cfg.generation.num_gpus + sum(s.num_gpus for s in cfg.scoring.scorers))


def _gpus_needed(cfg: RunConfig, generating: bool) -> float:
    gen = cfg.generation
    if _fused(cfg, generating):
        return gen.num_workers * _fused_actor_gpus(cfg)
    score = sum(_pool_gpus(sum(s.num_gpus for s in g)) for g in _scoring_pools(cfg, generating))
    return score * cfg.scoring.num_workers + (gen.num_workers * gen.num_gpus if generating else 0.0)


def _actors_needed(cfg: RunConfig, generating: bool) -> int:
    pools = len(_scoring_pools(cfg, generating))
    return (cfg.generation.num_workers if generating else 0) + pools * cfg.scoring.num_workers


def build_dataset(
    items: pa.Table,
    cfg: RunConfig,
    *,
    generating: bool,
    model_refs: Mapping[str, ModelRef],
    scorer_factory: ScorerFactory | None,
):
    """The Ray Data plan: work items → GenerateBatch pool → ScoreBatch pool(s), or one GenerateAndScoreBatch
    pool (`layout: fused`). Lazy until iterated.

    `model_refs`: model tag → reference; the items' `model` column picks one per row.
    """
    import ray
    from ray.data import ActorPoolStrategy

    gen, scoring = cfg.generation, cfg.scoring
    step = gen.batch_size
    # One block per batch, described here: `from_arrow` would describe each block in a Ray task, which costs a
    # fresh worker process per call.
    ds = ray.data.from_blocks([items.slice(i, step) for i in range(0, items.num_rows, step)])
    if _fused(cfg, generating):
        return ds.map_batches(
            GenerateAndScoreBatch,
            fn_constructor_kwargs={
                "cfg": cfg,
                "model_refs": dict(model_refs),
                "scorer_factory": scorer_factory,
            },
            batch_size=step,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=gen.num_workers),
            num_gpus=_fused_actor_gpus(cfg),
        )
    if generating:
        ds = ds.map_batches(
            GenerateBatch,
            fn_constructor_kwargs={"cfg": cfg, "model_refs": dict(model_refs)},
            batch_size=step,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=gen.num_workers),
            num_gpus=gen.num_gpus,
        )
    for group in _scoring_pools(cfg, generating):
        gpus = sum(s.num_gpus for s in group)
        ds = ds.map_batches(
            ScoreBatch,
            fn_constructor_kwargs={
                "specs": group,
                "on_error": scoring.on_error,
                "scorer_factory": scorer_factory,
                "quiet": not cfg.run.verbose,
            },
            batch_size=max(s.batch_size for s in group),
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=scoring.num_workers),
            num_gpus=_pool_gpus(gpus),
        )
    return ds


def execute(
    items: pa.Table,
    cfg: RunConfig,
    store: CandidateStore,
    relabel: bool,
    model_refs: Mapping[str, ModelRef],
    scorer_factory: ScorerFactory | None,
    progress: bool,
    stage: str = "stage 1",
) -> None:
    """Run the plan for `items` and write every batch that comes back; a worker's Stage1Error is re-raised.

    Progress is ours (`pipeline.console.Progress`, images written): Ray Data's own bars and execution summaries
    are off, they would repeat it in Ray's vocabulary.
    """
    from ray.data import DataContext

    ensure_ray(num_cpus=max(os.cpu_count() or 1, _actors_needed(cfg, not relabel) + 1))
    check_resources(cfg, not relabel)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # A worker's Stage1Error reaches this process as itself, not as Ray Data's UserCodeException, whose cause is
    # lost on the way (exceptions pickle without __cause__): `find_stage1_error` can then name it in one line.
    context.raise_original_map_exception = True
    ds = build_dataset(
        items, cfg, generating=not relabel, model_refs=model_refs, scorer_factory=scorer_factory
    )
    bar = Progress(stage, items.num_rows, "images", enabled=progress)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            bar.update(store.write(batch))
    except Exception as exc:
        inner = find_stage1_error(exc)
        if inner is None or inner is exc:
            raise
        raise inner from exc
    finally:
        bar.close()
