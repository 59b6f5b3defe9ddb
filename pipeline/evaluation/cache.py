"""The evaluation's image cache: which images a comparison needs, which are already there, and reading them back.

An image is identified by (prompt, model tag, seed) (`pipeline.schema.make_image_id`), so an image generated for
one comparison is found by the next one that needs the same model on the same item: a table of N methods against
the base and head to head costs N + 1 generations, not one per comparison. The counts of reused and newly
generated images per model go into the evaluation's manifest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.evaluation.models import EvalError
from pipeline.paths import RunPaths, table_files
from pipeline.schema import SCORE_PREFIX, SeedScheme, make_image_id, noise_seed
from pipeline.stage1.store import read_ids


@dataclass(frozen=True)
class Reuse:
    """One model's images in one evaluation: how many it needs, how many were cached, how many are new."""

    planned: int
    reused: int
    generated: int


def planned_ids(
    tag: str, prompt_ids: Iterable[str], seeds: Iterable[int], scheme: SeedScheme = "per_prompt"
) -> set[str]:
    """Every image id a model needs on these items (`seeds`: the seed indices, as stage 1 takes them)."""
    seeds = list(seeds)
    return {make_image_id(pid, tag, noise_seed(pid, k, scheme)) for pid in prompt_ids for k in seeds}


def count_reuse(planned: Mapping[str, set[str]], cached: set[str], after: set[str]) -> dict[str, Reuse]:
    """Per model: planned images, those cached before this evaluation, those it added (`after`: cached at the end)."""
    out = {}
    for name, ids in planned.items():
        reused = len(ids & cached)
        out[name] = Reuse(planned=len(ids), reused=reused, generated=len(ids & after) - reused)
    return out


def cached_ids(cache: RunPaths) -> set[str]:
    """Image ids already in the cache (written or quarantined): stage 1 will not make them again."""
    return read_ids(cache.candidates) | read_ids(cache.errors)


def read_model_scores(
    candidates_dir: Path, wanted: Mapping[str, set[str]], metrics: list[str]
) -> dict[str, pl.DataFrame]:
    """Each model's rows among `wanted` image ids (tag → ids), read in one pass over the cache.

    The cache may hold other prompts, seeds and models (other evaluations); only the wanted ids are read. An image
    id names one image, so a row written twice is kept once, never counted as two items.
    """
    files = table_files(candidates_dir)
    if not files:
        raise EvalError(f"no candidate files in {candidates_dir}")
    all_ids = set().union(*wanted.values()) if wanted else set()
    frame = (
        pl.scan_parquet(files)
        .filter(pl.col("image_id").is_in(list(all_ids)))
        .select("model", "prompt_id", "prompt", "seed", "image_id", *[SCORE_PREFIX + m for m in metrics])
        .unique(subset="image_id", keep="first", maintain_order=True)
        .collect()
    )
    out = {}
    for tag in wanted:
        rows = frame.filter(pl.col("model") == tag).drop("model")
        if rows.is_empty():
            raise EvalError(f"no images of model {tag!r} in {candidates_dir}")
        out[tag] = rows
    return out
