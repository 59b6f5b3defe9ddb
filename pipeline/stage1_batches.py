"""The work of stage 1 as plain callables on batches: plan the images, generate them, score them.

No Ray here. `GenerateBatch` and `ScoreBatch` load their models once in `__init__` and map one batch to the next
(a dict of column arrays, or a pyarrow Table, in; a pyarrow Table out), so tests call them directly and
`pipeline/stage1.py` wraps them in Ray actor pools. Tables are returned rather than dicts of numpy arrays so the
column types (binary PNGs, list<float32> latents) are exactly those of `pipeline.schema`.

A failed score never becomes a silent NaN: with `on_error="fail"` the batch raises `ScoringError` naming the prompt
ids; with `on_error="quarantine"` the failing rows (found by rescoring the batch one row at a time) carry their
message in the `_error` column and the writer sends them to `<run>/errors/`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.config import GenerationSection, RunConfig, ScorerSpec
from pipeline.schema import CANDIDATE_FIELDS, SCORE_PREFIX, make_image_id

# Internal columns that travel with a batch between actors and are dropped before writing.
ERROR_COLUMN = "_error"
GEN_SECONDS = "_gen_seconds"
SCORE_SECONDS = "_score_seconds"

ModelLoader = Callable[[], Any]  # returns a ready diffusers pipeline
ScorerFactory = Callable[[ScorerSpec], Callable[[Sequence[Image.Image], Sequence[str]], np.ndarray]]


class Stage1Error(RuntimeError):
    """Stage 1 cannot continue; the message names the prompt ids, scorer or file involved."""


class ScoringError(Stage1Error):
    """A scorer raised on a batch (or returned non-finite scores) and `on_error` is `fail`."""


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


def load_generation_pipeline(
    cfg: RunConfig, model_ref: str | ModelLoader | None = None, device: str = "auto"
):
    """The one place a generation model is loaded.

    `model_ref` None → `cfg.model`; a string (hub id, local diffusers directory, `tiny/<family>`) replaces
    `cfg.model.pretrained`; a callable is a loader hook returning a ready pipeline (e.g. a base model with tuned
    UNet or LoRA weights applied), used as is.
    """
    from pipeline.diffusion import load_pipeline, pick_device

    if callable(model_ref):
        pipe = model_ref()
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(pick_device(device))
    model = cfg.model if model_ref is None else cfg.model.model_copy(update={"pretrained": str(model_ref)})
    return load_pipeline(model, device=device, scheduler=cfg.generation.scheduler)


def _columns(batch: Mapping[str, Any] | pa.Table) -> dict[str, list]:
    if isinstance(batch, pa.Table):
        return batch.to_pydict()
    return {k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in batch.items()}


class GenerateBatch:
    """Work items → candidate rows (PNG bytes, final latents, generation parameters), one pipeline per actor."""

    def __init__(
        self, cfg: RunConfig, model_ref: str | ModelLoader | None = None, device: str = "auto"
    ) -> None:
        self.gen: GenerationSection = cfg.generation
        self.pipe = load_generation_pipeline(cfg, model_ref, device)

    def __call__(self, batch: Mapping[str, Any] | pa.Table) -> pa.Table:
        from pipeline.diffusion import generate

        cols = _columns(batch)
        n = len(cols["image_id"])
        start = time.perf_counter()
        pngs: list[bytes] = []
        latents: list[np.ndarray] = []
        step = self.gen.batch_size
        for i in range(0, n, step):
            try:
                out = generate(self.pipe, cols["prompt"][i : i + step], cols["seed"][i : i + step], self.gen)
            except Exception as exc:
                ids = sorted(set(cols["prompt_id"][i : i + step]))
                raise Stage1Error(
                    f"generation failed for prompt ids {ids}: {type(exc).__name__}: {exc}"
                ) from exc
            pngs.extend(out.png)
            latents.extend(out.latents)
        elapsed = time.perf_counter() - start
        shape = list(latents[0].shape) if latents else []
        fixed = {
            **{k: cols[k] for k in ("image_id", "prompt_id", "prompt", "source", "model", "round", "seed")},
            "height": [self.gen.height] * n,
            "width": [self.gen.width] * n,
            "num_inference_steps": [self.gen.num_inference_steps] * n,
            "guidance_scale": [self.gen.guidance_scale] * n,
            "image": pngs,
            "latent": [lat.astype(np.float32, copy=False).ravel() for lat in latents],
            "latent_shape": [shape] * n,
        }
        table = pa.table(fixed, schema=pa.schema(CANDIDATE_FIELDS))
        return table.append_column(GEN_SECONDS, pa.array([elapsed / max(n, 1)] * n, pa.float64()))


def decode_images(encoded: Sequence[bytes]) -> list[Image.Image]:
    """PNG/JPEG bytes → RGB PIL images (scorers expect RGB)."""
    images = []
    for data in encoded:
        with Image.open(io.BytesIO(data)) as im:
            images.append(im.convert("RGB"))
    return images


def default_scorer_factory(spec: ScorerSpec):
    from scorers import build_scorer

    return build_scorer(spec)


class ScoreBatch:
    """Candidate rows → the same rows plus one `score_<name>` column per scorer; several scorers chain in one actor."""

    def __init__(
        self,
        specs: Sequence[ScorerSpec],
        on_error: str = "fail",
        scorer_factory: ScorerFactory | None = None,
    ) -> None:
        if on_error not in ("fail", "quarantine"):
            raise ValueError(f"on_error must be 'fail' or 'quarantine', got {on_error!r}")
        factory = scorer_factory or default_scorer_factory
        self.on_error = on_error
        self.scorers = [(spec.name, factory(spec)) for spec in specs]

    def __call__(self, batch: Mapping[str, Any] | pa.Table) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.table(dict(batch))
        n = table.num_rows
        errors: list[str | None] = (
            table.column(ERROR_COLUMN).to_pylist() if ERROR_COLUMN in table.column_names else [None] * n
        )
        images = decode_images(table.column("image").to_pylist())
        prompts = table.column("prompt").to_pylist()
        prompt_ids = table.column("prompt_id").to_pylist()
        seconds = (
            table.column(SCORE_SECONDS).to_pylist() if SCORE_SECONDS in table.column_names else [0.0] * n
        )
        for name, scorer in self.scorers:
            start = time.perf_counter()
            scores = self._score(name, scorer, images, prompts, prompt_ids, errors)
            per_row = (time.perf_counter() - start) / max(n, 1)
            seconds = [s + per_row for s in seconds]
            table = _set_column(table, SCORE_PREFIX + name, pa.array(scores, pa.float32()))
        table = _set_column(table, ERROR_COLUMN, pa.array(errors, pa.string()))
        return _set_column(table, SCORE_SECONDS, pa.array(seconds, pa.float64()))

    def _score(
        self,
        name: str,
        scorer: Callable,
        images: list[Image.Image],
        prompts: list[str],
        prompt_ids: list[str],
        errors: list[str | None],
    ) -> np.ndarray:
        try:
            return _checked(name, scorer(images, prompts), len(images))
        except Exception as exc:
            if self.on_error == "fail":
                ids = sorted(set(prompt_ids))
                raise ScoringError(
                    f"scorer {name!r} failed on a batch of {len(images)} images, prompt ids {ids}: "
                    f"{type(exc).__name__}: {exc} (set scoring.on_error: quarantine to keep going)"
                ) from exc
        # Quarantine: rescore row by row so only the rows that really fail are set aside.
        scores = np.full(len(images), np.nan, dtype=np.float32)
        for i, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
            try:
                scores[i] = _checked(name, scorer([image], [prompt]), 1)[0]
            except Exception as exc:
                message = f"scorer {name!r}: {type(exc).__name__}: {exc}"
                errors[i] = message if errors[i] is None else f"{errors[i]}; {message}"
        return scores


def _checked(name: str, scores: Any, expected: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if scores.shape[0] != expected:
        raise ScoringError(f"scorer {name!r} returned {scores.shape[0]} scores for {expected} images")
    if not np.all(np.isfinite(scores)):
        bad = np.flatnonzero(~np.isfinite(scores)).tolist()
        raise ScoringError(f"scorer {name!r} returned non-finite scores at batch positions {bad}")
    return scores


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)
