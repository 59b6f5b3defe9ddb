"""Several training variants on one set of candidates, evaluated side by side against the same base images.

    python -m pipeline.ablation --config configs/tiny.yaml \\
        --variant majority --variant static=majority:train.ref_update.mode=none \\
        --variant sum=sum --variant single_pickscore=single:pickscore --variant shuffled=majority:shuffle

A variant is `NAME=STRATEGY[:KEY=VALUE|:shuffle]...`: a vote strategy, config overrides for its training (reference
mode, seed, β, ...), and optionally `shuffle`, a placebo that swaps winner and loser in a seeded random half of the
pairs. Stage 1 runs once into `<run>/candidates/`; each variant votes and trains in `<run>/ablation/<name>/` (its
`candidates` is a link to the shared table); `<run>/ablation/eval/` holds the side-by-side win rates.

From Python: `run_ablation(cfg, [Variant(...), ...]) -> AblationOutputs`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import RunConfig, derive_config
from pipeline.evaluation import EvalOutputs, TunedModel, evaluate
from pipeline.io import read_manifest, write_manifest, write_parquet_atomic
from pipeline.paths import RunPaths, table_files
from pipeline.schema import VOTE_PREFIX
from pipeline.stage1.batches import ScorerFactory
from pipeline.voting import disk_name


@dataclass(frozen=True)
class Variant:
    """One training run of the ablation."""

    name: str
    strategy: str = "majority"
    overrides: tuple[str, ...] = ()
    shuffle_labels: bool = False


@dataclass
class AblationOutputs:
    candidates_dir: Path
    variant_dirs: dict[str, Path]
    eval: EvalOutputs
    seconds: dict[str, float] = field(default_factory=dict)


def parse_variant(spec: str) -> Variant:
    """`NAME=STRATEGY[:KEY=VALUE|:shuffle]...`, or just `STRATEGY` (named after it)."""
    name, sep, rest = spec.partition("=")
    if not sep or ":" in name:
        name, rest = "", spec
    strategy, *options = rest.split(":")
    # `single:<metric>` contains a colon of its own.
    if strategy == "single" and options:
        strategy = f"single:{options.pop(0)}"
    overrides = tuple(o for o in options if o != "shuffle")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"variant {spec!r}: options must be KEY=VALUE or shuffle, found {bad}")
    return Variant(name or disk_name(strategy), strategy, overrides, "shuffle" in options)


def pair_coins(pair_ids: list[str], seed: int) -> np.ndarray:
    """A fair seeded coin per pair id (True: swap), independent of the order the ids come in."""
    digests = (hashlib.blake2b(f"{seed}:{pid}".encode(), digest_size=8).digest() for pid in pair_ids)
    return np.fromiter((d[0] & 1 == 1 for d in digests), dtype=bool, count=len(pair_ids))


def shuffle_pair_labels(pairs_dir: Path, seed: int) -> int:
    """Placebo labels: swap winner and loser in a seeded random half of the pairs, in place; returns how many.

    Each pair's coin is drawn from the seed and its `pair_id`, so the same pairs swap whatever the row order of the
    table (which follows the order stage 1 wrote its candidates in) or its split into files. Votes are negated and
    vote counts swapped with them, so the table stays consistent with its schema.
    """
    files = table_files(pairs_dir)
    if not files:
        raise ValueError(f"no pairs files in {pairs_dir}")
    swapped = 0
    for path in files:
        table = pq.read_table(path)
        swap = pa.array(pair_coins(table.column("pair_id").to_pylist(), seed))
        columns = {}
        for name in table.column_names:
            col = table.column(name)
            if name in ("image_id_w", "votes_w"):
                col = pc.if_else(swap, table.column(name[:-1] + "l"), col)
            elif name in ("image_id_l", "votes_l"):
                col = pc.if_else(swap, table.column(name[:-1] + "w"), col)
            elif name.startswith(VOTE_PREFIX):
                col = pc.if_else(swap, pc.negate(col), col)
            columns[name] = col
        write_parquet_atomic(pa.table(columns).cast(table.schema), path)
        swapped += int(pc.sum(swap).as_py() or 0)
    manifest = read_manifest(pairs_dir) if (pairs_dir / "manifest.json").is_file() else {}
    manifest.pop("created", None)
    manifest.pop("packages", None)
    write_manifest(pairs_dir, **manifest, labels_shuffled={"seed": seed, "n_swapped": swapped})
    return swapped


def variant_config(cfg: RunConfig, variant: Variant, run_dir: Path) -> RunConfig:
    """The run configuration of one variant: its overrides, its strategy, its own run directory."""
    return derive_config(
        cfg,
        list(variant.overrides),
        **{
            "run.output_dir": str(run_dir),
            "vote.strategy": variant.strategy,
            "train.strategy": disk_name(variant.strategy),
        },
    )


def run_ablation(
    cfg: RunConfig,
    variants: list[Variant],
    *,
    scorer_factory: ScorerFactory | None = None,
    progress: bool = True,
) -> AblationOutputs:
    """Stage 1 once, then vote + train per variant, then one evaluation of all variants against the base."""
    from pipeline.stage1 import run_stage1
    from pipeline.voting import run_vote
    from trainer.train import train

    names = [v.name for v in variants]
    if not variants or len(set(names)) != len(names):
        raise ValueError(f"need at least one variant, with distinct names; got {names}")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    candidates = run_stage1(cfg, scorer_factory=scorer_factory, progress=progress).candidates_dir.resolve()
    seconds["stage1_s"] = time.perf_counter() - t0
    dirs, tuned = {}, []
    for variant in variants:
        t0 = time.perf_counter()
        vdir = RunPaths(cfg.output_dir).ablation(variant.name).root
        vcfg = variant_config(cfg, variant, vdir)
        vdir.mkdir(parents=True, exist_ok=True)
        link = vdir / "candidates"
        if not link.is_symlink():
            link.symlink_to(candidates, target_is_directory=True)
        pairs = run_vote(vcfg, candidates_dir=candidates)
        if variant.shuffle_labels:
            shuffle_pair_labels(pairs, seed=vcfg.vote.seed)
        trained = train(vcfg)
        if trained.final_dir is None:
            raise RuntimeError(f"variant {variant.name!r}: training stopped before final weights")
        dirs[variant.name] = vdir
        tuned.append(TunedModel(variant.name, weights_dir=trained.final_dir))
        seconds[f"{variant.name}_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluation = evaluate(
        cfg,
        tuned,
        out_dir=RunPaths(cfg.output_dir).ablation_eval,
        scorer_factory=scorer_factory,
        progress=progress,
        title="Ablation: win rate of each variant over the base",
    )
    seconds["eval_s"] = time.perf_counter() - t0
    return AblationOutputs(candidates, dirs, evaluation, seconds)
