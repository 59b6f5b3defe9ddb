"""What stage 1 will make, before any model loads: work items, model references, prompts, imported pairs.

Pure functions of the config and the inputs (no Ray, no model): a work item is one (prompt, model, seed) with its
deterministic `image_id`, so a rerun recognises finished items and any item can be regenerated on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import PromptsSection, RunConfig
from pipeline.data.prompts import PromptSet, load_prompts, prompts_from_strings
from pipeline.io import write_manifest, write_parquet_atomic
from pipeline.paths import RunPaths, part_name
from pipeline.schema import make_image_id
from pipeline.stage1.errors import Stage1Error

ModelLoader = Callable[[], Any]  # returns a ready diffusers pipeline
ModelRef = str | ModelLoader | None  # a hub id / local directory / tiny name, a loader, or None: cfg.model
ITEM_SCHEMA = pa.schema(
    [(k, pa.string()) for k in ("image_id", "prompt_id", "prompt", "source", "model")]
    + [("round", pa.int32()), ("seed", pa.int64())]
)


def plan_items(
    prompts: Sequence[tuple[str, str, str]],
    *,
    model_tag: str,
    seeds: Sequence[int],
    round_: int = 0,
) -> dict[str, list]:
    """One work item per (prompt, seed), prompt-major, as columns.

    `prompts` holds (prompt_id, prompt, source) triples. The seed alone fixes an image's initial noise, so any
    item can be regenerated on its own; `image_id` is deterministic, so reruns recognise finished items.
    """
    cols: dict[str, list] = {
        k: [] for k in ("image_id", "prompt_id", "prompt", "source", "model", "round", "seed")
    }
    for prompt_id, prompt, source in prompts:
        for seed in seeds:
            cols["image_id"].append(make_image_id(prompt_id, model_tag, int(seed)))
            cols["prompt_id"].append(prompt_id)
            cols["prompt"].append(prompt)
            cols["source"].append(source)
            cols["model"].append(model_tag)
            cols["round"].append(int(round_))
            cols["seed"].append(int(seed))
    return cols


def generation_items(
    prompt_set: PromptSet, model_tags: Sequence[str], seeds: Sequence[int], round_: int
) -> pa.Table:
    """Every (model, prompt, seed) item as one table, grouped by model: an actor switches models once per model."""
    triples = list(prompt_set.table.select("prompt_id", "prompt", "source").iter_rows())
    return pa.concat_tables(
        pa.table(plan_items(triples, model_tag=tag, seeds=seeds, round_=round_)).cast(ITEM_SCHEMA)
        for tag in model_tags
    )


def chunk_by_model(models: Sequence[str], size: int) -> list[tuple[int, int]]:
    """[lo, hi) row ranges of at most `size` rows that never mix two models."""
    out, lo = [], 0
    for i in range(1, len(models) + 1):
        if i == len(models) or models[i] != models[lo] or i - lo == size:
            out.append((lo, i))
            lo = i
    return out


def resolve_prompts(cfg: RunConfig, prompts: PromptsSection | PromptSet | Sequence[str] | None) -> PromptSet:
    """The prompts of this call: the config's, another prompt section (evaluation), a prompt set or strings."""
    if prompts is None:
        return load_prompts(cfg.prompts)
    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, PromptsSection):
        return load_prompts(prompts)
    return prompts_from_strings(list(prompts))


def resolve_model_refs(
    cfg: RunConfig,
    model_ref: ModelRef,
    model_tag: str | None,
    models: Mapping[str, ModelRef] | None,
) -> dict[str, ModelRef]:
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


def relabel_items(cfg: RunConfig, paths: RunPaths) -> tuple[pa.Table, Path, dict[str, Any]]:
    """Relabel mode: the pair dataset's images become candidate rows; its human labels are kept beside them."""
    from pipeline.data.pickapic import import_pickapic

    assert cfg.prompts.pairs is not None
    candidates, human = import_pickapic(cfg.prompts.pairs)
    human_dir = paths.human_pairs
    write_parquet_atomic(human, human_dir / part_name(0))
    write_manifest(human_dir, source=cfg.prompts.pairs, n_rows=human.num_rows)
    stats = {"n_pairs": human.num_rows, "n_images": candidates.num_rows}
    return candidates, human_dir, stats
