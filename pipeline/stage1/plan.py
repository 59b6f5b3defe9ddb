"""What stage 1 will make, before any model loads: work items, model references, prompts, imported pairs.

Pure functions of the config and the inputs (no Ray, no model): a work item is one (prompt, model, seed) with its
deterministic `image_id`, so a rerun recognises finished items and any item can be regenerated on its own.
`check_references` finds unknown scorers and missing model paths here, before a Ray cluster starts, instead of
inside an actor 40 s later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import PromptsSection, RunConfig, ScorerSpec
from pipeline.data.prompts import PromptSet, load_prompts, prompts_from_strings
from pipeline.io import write_manifest, write_parquet_atomic
from pipeline.models.refs import is_tiny, parse_tiny
from pipeline.paths import RunPaths, part_name
from pipeline.schema import SeedScheme, make_image_id, noise_seed
from pipeline.stage1.errors import Stage1Error

# `scorers.available()` without importing the scorer models (seconds of torch/open_clip in the driver); a name
# outside it is looked up in the real registry, which a test keeps equal to this tuple.
BUILTIN_SCORERS = ("aesthetic", "clip", "hpsv2", "hpsv21", "imagereward", "pickscore")
SCORER_WEIGHT_KEYWORDS = ("tiny", "random-full")  # `pretrained` values that name no file

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
    seed_scheme: SeedScheme = "per_prompt",
) -> dict[str, list]:
    """One work item per (prompt, seed index), prompt-major, as columns.

    `prompts` holds (prompt_id, prompt, source) triples; `seeds` are indices that `noise_seed` turns into each
    prompt's generator seeds. The seed alone fixes an image's initial noise, so any item can be regenerated on its
    own; `image_id` is deterministic, so reruns recognise finished items.
    """
    cols: dict[str, list] = {
        k: [] for k in ("image_id", "prompt_id", "prompt", "source", "model", "round", "seed")
    }
    for prompt_id, prompt, source in prompts:
        for index in seeds:
            seed = noise_seed(prompt_id, index, seed_scheme)
            cols["image_id"].append(make_image_id(prompt_id, model_tag, int(seed)))
            cols["prompt_id"].append(prompt_id)
            cols["prompt"].append(prompt)
            cols["source"].append(source)
            cols["model"].append(model_tag)
            cols["round"].append(int(round_))
            cols["seed"].append(int(seed))
    return cols


def generation_items(
    prompt_set: PromptSet,
    model_tags: Sequence[str],
    seeds: Sequence[int],
    round_: int,
    seed_scheme: SeedScheme = "per_prompt",
) -> pa.Table:
    """Every (model, prompt, seed) item as one table, grouped by model: an actor switches models once per model."""
    triples = list(prompt_set.table.select("prompt_id", "prompt", "source").iter_rows())
    return pa.concat_tables(
        pa.table(
            plan_items(triples, model_tag=tag, seeds=seeds, round_=round_, seed_scheme=seed_scheme)
        ).cast(ITEM_SCHEMA)
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


def relabel_items(cfg: RunConfig, paths: RunPaths) -> tuple[pa.Table, Path, dict[str, Any], pa.Table]:
    """Relabel mode: the pair dataset's images become candidate rows; its human labels are kept beside them.

    Images are decoded whole here, before Ray: with `scoring.on_error: quarantine` an unreadable one comes back
    in the last table (rows with an `_error` message, for `<run>/errors/`), otherwise it is an error naming its
    row. Rows showing one image twice are dropped; the stats count both.
    """
    from pipeline.data.pickapic import read_pickapic
    from pipeline.stage1.batches import ERROR_COLUMN

    assert cfg.prompts.pairs is not None
    imported = read_pickapic(cfg.prompts.pairs, on_bad_image=cfg.scoring.on_error)
    human = imported.human_pairs
    human_dir = paths.human_pairs
    write_parquet_atomic(human, human_dir / part_name(0))
    write_manifest(human_dir, source=cfg.prompts.pairs, n_rows=human.num_rows, counts=imported.counts)
    stats = {"n_pairs": human.num_rows, "n_images": imported.candidates.num_rows, **imported.counts}
    stats["n_images_quarantined"] = imported.rejected.num_rows
    rejected = imported.rejected.rename_columns([*imported.rejected.column_names[:-1], ERROR_COLUMN])
    return imported.candidates, human_dir, stats, rejected


class InputError(Stage1Error):
    """A config or call that names something that does not exist (a scorer, a model, a file): found before Ray."""


def _looks_local(ref: str) -> bool:
    """The rule the loaders use: absolute, relative or home paths name something on disk, not a hub repository."""
    return ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists()


def model_reference_problem(ref: str) -> str | None:
    """Why a model reference cannot load, when that is visible without loading it (hub ids are not checked)."""
    if is_tiny(ref):
        try:
            parse_tiny(ref)
        except ValueError as exc:
            return str(exc)
        return None
    if _looks_local(ref):
        path = Path(ref).expanduser()
        if not path.is_dir():
            return f"model directory not found: {path}"
        if not (path / "model_index.json").is_file():
            return f"{path} is not a diffusers pipeline directory (no model_index.json)"
    return None


def scorer_problems(specs: Sequence[ScorerSpec]) -> list[str]:
    """Unknown scorer names and missing local weight paths, each naming its `scoring.scorers` entry."""
    problems = []
    unknown = [s.name for s in specs if s.name not in BUILTIN_SCORERS]
    if unknown:
        from scorers import available  # the slow path: a user-registered scorer, or a typo

        registered = available()
        unknown = [n for n in unknown if n not in registered]
        if unknown:
            problems.append(f"scoring.scorers: unknown scorer(s) {unknown}; registered: {registered}")
    for i, spec in enumerate(specs):
        ref = spec.pretrained
        if (
            ref
            and ref not in SCORER_WEIGHT_KEYWORDS
            and _looks_local(ref)
            and not Path(ref).expanduser().exists()
        ):
            problems.append(
                f"scoring.scorers[{i}] ({spec.name}).pretrained: file or directory not found: {ref}"
            )
    return problems


def check_references(cfg: RunConfig, model_refs: Mapping[str, ModelRef], default_scorers: bool) -> None:
    """Everything the actors would load that can be checked from here; one error listing every problem.

    `default_scorers`: scorers are built by `scorers.build_scorer` (a custom factory knows its own names).
    """
    problems = scorer_problems(cfg.scoring.scorers) if default_scorers else []
    for tag, ref in model_refs.items():
        if callable(ref):
            continue
        problem = model_reference_problem(str(ref or cfg.model.pretrained))
        if problem:
            which = "model.pretrained" if ref is None else f"model {tag!r}"
            problems.append(f"{which}: {problem}")
    if problems:
        raise InputError("; ".join(problems))
