"""Training data: pairs joined to candidates, with every per-item cost paid once, before the first step.

The hot loop only indexes arrays. Before training, `prepare_train_data` reads the pairs table and the candidates
it names, checks them, and writes a cache under `<train dir>/cache/<key>/`:
- `latents.npy` (images, C, H, W): the stored final latents (already × VAE scaling factor); images without one
  (imported datasets) are decoded, brought to the training size (`trainer.images`: resize, crop, optional flip)
  and VAE-encoded here, once (the posterior mean, so the cache is deterministic);
- `embeds.npy` (prompts, tokens, dim) and, for SDXL, `pooled.npy`: each distinct prompt encoded once, through the
  pipeline's own `encode_prompt` (SDXL: both text encoders, pooled embedding of the second);
- `empty_embeds.npy` (and SDXL's `empty_pooled.npy`): the empty prompt, encoded the same way, for prompt dropout;
- `sizes.npy` (images, 2): height and width, for SDXL's time ids (the training size for encoded images, as the
  reference trainer conditions on).
The key hashes the model, the image rule and the image and prompt ids, so a rerun on the same pairs reuses the
cache and a new pairs table builds its own. Arrays are memory-mapped, so a large set does not have to fit in RAM.

Which pairs a step sees and the noise it draws are `trainer.sampling`'s business.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from PIL import Image

from pipeline.paths import TABLE_GLOB, table_files
from trainer.images import ImageRule, fit_image

PAIR_COLUMNS = ("prompt_id", "prompt", "image_id_w", "image_id_l", "confidence")
CACHE_VERSION = 2  # 2: the empty prompt's embedding; imported images brought to the training size


class TrainDataError(ValueError):
    """Pairs or candidates that cannot be trained on; the message names the table, the column and the rows."""


@dataclass
class Pairs:
    """The pairs table, as arrays in file order."""

    prompt_id: np.ndarray
    prompt: np.ndarray
    image_id_w: np.ndarray
    image_id_l: np.ndarray
    confidence: np.ndarray
    source: Path

    def __len__(self) -> int:
        return len(self.image_id_w)


def parquet_files(directory: Path, what: str) -> list[Path]:
    """The table's part files; a missing directory or an empty one is an error naming it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TrainDataError(f"{what} directory not found: {directory}")
    files = table_files(directory)
    if not files:
        raise TrainDataError(f"no {TABLE_GLOB} files in {what} directory {directory}")
    return files


def read_training_pairs(pairs_dir: Path) -> Pairs:
    """Read `<run>/pairs/<strategy>/part-*.parquet`; an empty table or a missing column is an error.

    Rows are sorted by (winner, loser) id: the vote writes pairs in no fixed order (and over several files), and
    the trainer samples by row position, so without the sort re-voting the same candidates would change the run.
    """
    files = parquet_files(pairs_dir, "pairs")
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    missing = [c for c in PAIR_COLUMNS if c not in table.column_names]
    if missing:
        raise TrainDataError(f"pairs table {pairs_dir} lacks columns {missing}; found {table.column_names}")
    table = table.sort_by([("image_id_w", "ascending"), ("image_id_l", "ascending")])
    if table.num_rows == 0:
        raise TrainDataError(f"pairs table {pairs_dir} is empty: nothing to train on")
    cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in PAIR_COLUMNS}
    same = np.flatnonzero(cols["image_id_w"] == cols["image_id_l"])
    if same.size:
        raise TrainDataError(
            f"pairs table {pairs_dir}: rows {same[:5].tolist()} pair an image with itself "
            f"(image_id_w == image_id_l == {cols['image_id_w'][same[0]]!r})"
        )
    return Pairs(
        prompt_id=cols["prompt_id"].astype(str),
        prompt=cols["prompt"].astype(str),
        image_id_w=cols["image_id_w"].astype(str),
        image_id_l=cols["image_id_l"].astype(str),
        confidence=cols["confidence"].astype(np.float32),
        source=Path(pairs_dir),
    )


def read_candidates(candidates_dir: Path, image_ids: list[str], pairs_dir: Path) -> pa.Table:
    """The candidate rows for `image_ids` (latent, latent_shape, height, width; PNG only where a latent is null).

    Every id must be present exactly once: a pair naming a missing image is an error that lists the ids.
    """
    files = parquet_files(candidates_dir, "candidates")
    wanted = pa.array(sorted(set(image_ids)), pa.string())
    cols = ["image_id", "latent", "latent_shape", "height", "width"]
    parts = []
    for f in files:
        names = pq.read_schema(f).names
        absent = [c for c in cols if c not in names]
        if absent:
            raise TrainDataError(f"candidates file {f} lacks columns {absent}")
        t = pq.read_table(f, columns=cols)
        parts.append(t.filter(pc.is_in(t.column("image_id"), value_set=wanted)))
    table = pa.concat_tables(parts)
    found = set(table.column("image_id").to_pylist())
    missing = [i for i in wanted.to_pylist() if i not in found]
    if missing:
        raise TrainDataError(
            f"pairs in {pairs_dir} reference {len(missing)} image_id(s) absent from candidates "
            f"{candidates_dir}, e.g. {missing[:5]}"
        )
    if table.num_rows != len(found):
        ids = table.column("image_id").to_pylist()
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise TrainDataError(f"candidates {candidates_dir}: image_id(s) appear more than once: {dup[:5]}")
    return table


def read_pngs(candidates_dir: Path, image_ids: list[str]) -> dict[str, bytes]:
    """PNG bytes of the given images (only those that need a VAE encode)."""
    wanted = pa.array(sorted(set(image_ids)), pa.string())
    out: dict[str, bytes] = {}
    for f in parquet_files(candidates_dir, "candidates"):
        t = pq.read_table(f, columns=["image_id", "image"])
        t = t.filter(pc.is_in(t.column("image_id"), value_set=wanted))
        out.update(zip(t.column("image_id").to_pylist(), t.column("image").to_pylist(), strict=True))
    return out


def stored_latents(table: pa.Table, candidates_dir: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Stored latents by image id, reshaped and checked; returns (ids without a latent, latents)."""
    need_vae: list[str] = []
    latents: dict[str, np.ndarray] = {}
    ids = table.column("image_id").to_pylist()
    flat = table.column("latent").to_pylist()
    shapes = table.column("latent_shape").to_pylist()
    for image_id, values, shape in zip(ids, flat, shapes, strict=True):
        if values is None:
            need_vae.append(image_id)
            continue
        if shape is None or int(np.prod(shape)) != len(values):
            raise TrainDataError(
                f"candidates {candidates_dir}, image_id {image_id!r}: latent has {len(values)} values "
                f"but latent_shape is {shape}"
            )
        latents[image_id] = np.asarray(values, dtype=np.float32).reshape(shape)
    return need_vae, latents


def check_latents(latents: dict[str, np.ndarray], in_channels: int, candidates_dir: Path) -> tuple[int, ...]:
    """All latents share one shape (C, H, W) with C the UNet's input channels, and are finite."""
    shape: tuple[int, ...] | None = None
    first = ""
    for image_id, lat in latents.items():
        if shape is None:
            shape, first = lat.shape, image_id
            if len(shape) != 3 or shape[0] != in_channels:
                raise TrainDataError(
                    f"candidates {candidates_dir}, image_id {image_id!r}: latent shape {list(shape)} does not "
                    f"fit the UNet (expected [{in_channels}, H, W])"
                )
        elif lat.shape != shape:
            raise TrainDataError(
                f"candidates {candidates_dir}: latents of mismatched shape: image_id {image_id!r} has "
                f"{list(lat.shape)}, image_id {first!r} has {list(shape)}; train on one resolution at a time"
            )
        if not np.isfinite(lat).all():
            raise TrainDataError(f"candidates {candidates_dir}, image_id {image_id!r}: latent is not finite")
    assert shape is not None
    return shape


@torch.no_grad()
def vae_encode_pngs(
    pipe,
    pngs: list[bytes],
    batch_size: int,
    rule: ImageRule | None = None,
    image_ids: list[str] | None = None,
) -> list[np.ndarray]:
    """PNG → (with a `rule`: resized, cropped, maybe mirrored, `trainer.images`) → image tensor in [−1, 1] →
    VAE posterior mean × scaling factor, in batches of one image size."""
    vae = pipe.vae
    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in pngs]
    if rule is not None:
        ids = image_ids if image_ids is not None else [str(i) for i in range(len(images))]
        images = [fit_image(im, rule, i) for im, i in zip(images, ids, strict=True)]
    out: list[np.ndarray | None] = [None] * len(images)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        by_size.setdefault(im.size, []).append(i)
    for idx in by_size.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            pixels = pipe.image_processor.preprocess([images[i] for i in chunk])
            pixels = pixels.to(device=vae.device, dtype=vae.dtype)
            lat = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
            for i, row in zip(chunk, lat.float().cpu().numpy(), strict=True):
                out[i] = row
    # A list, not a stack: images of different sizes are `check_latents`' to report, naming them.
    return out  # type: ignore[return-value]


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str], batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Text embeddings (and SDXL's pooled embedding) through the pipeline's own `encode_prompt`."""
    embeds, pooled = [], []
    is_xl = hasattr(pipe, "text_encoder_2")
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        if is_xl:
            pe, _, pp, _ = pipe.encode_prompt(
                prompt=chunk, device=pipe.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            pooled.append(pp.float().cpu().numpy())
        else:
            pe, _ = pipe.encode_prompt(chunk, pipe.device, 1, False)
        embeds.append(pe.float().cpu().numpy())
    return np.concatenate(embeds), (np.concatenate(pooled) if is_xl else None)


@dataclass
class TrainData:
    """Everything the loop indexes: per-image latents and sizes, per-prompt embeddings, per-pair indices."""

    latents: np.ndarray  # (images, C, H, W), memory-mapped
    sizes: np.ndarray  # (images, 2) height, width
    embeds: np.ndarray  # (prompts, tokens, dim)
    pooled: np.ndarray | None  # (prompts, dim), SDXL only
    w_index: np.ndarray  # (pairs,) rows of `latents`
    l_index: np.ndarray
    prompt_index: np.ndarray  # (pairs,) rows of `embeds`
    confidence: np.ndarray  # (pairs,)
    cache_dir: Path
    num_vae_encoded: int = 0
    empty_embeds: np.ndarray | None = None  # (1, tokens, dim): the empty prompt, for prompt dropout
    empty_pooled: np.ndarray | None = None  # (1, dim), SDXL only

    def __len__(self) -> int:
        return len(self.w_index)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.latents.shape[1:])

    def batch(
        self, pair_rows: np.ndarray, device: torch.device, empty_prompt: np.ndarray | None = None
    ) -> dict[str, torch.Tensor]:
        """Tensors for the given pairs: winner and loser latents, text conditioning, confidence.

        `empty_prompt` (bool per pair): those pairs get the empty prompt's embedding (prompt dropout).
        """

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        w, lo, p = self.w_index[pair_rows], self.l_index[pair_rows], self.prompt_index[pair_rows]
        embeds = self.embeds[p]
        pooled = self.pooled[p] if self.pooled is not None else None
        if empty_prompt is not None and empty_prompt.any():
            if self.empty_embeds is None:
                raise TrainDataError(f"cache {self.cache_dir} holds no empty-prompt embedding")
            embeds = np.array(embeds)
            embeds[empty_prompt] = self.empty_embeds[0]
            if pooled is not None:
                assert self.empty_pooled is not None
                pooled = np.array(pooled)
                pooled[empty_prompt] = self.empty_pooled[0]
        out = {
            "latents_w": t(self.latents[w]),
            "latents_l": t(self.latents[lo]),
            "embeds": t(embeds),
            "confidence": t(self.confidence[pair_rows]),
        }
        if pooled is not None:
            h, wd = self.sizes[w, 0], self.sizes[w, 1]
            zeros = np.zeros_like(h)
            out["pooled"] = t(pooled)
            out["time_ids"] = t(np.stack([h, wd, zeros, zeros, h, wd], axis=1).astype(np.float32))
        return out


def cache_key(
    model_ref: str, image_ids: list[str], prompt_ids: list[str], rule: ImageRule | None = None
) -> str:
    h = hashlib.sha1()
    rule_key = rule.key() if rule is not None else "as-is"
    for part in (f"v{CACHE_VERSION}", model_ref, rule_key, *image_ids, "|", *prompt_ids):
        h.update(part.encode("utf-8") + b"\x1f")
    return h.hexdigest()[:16]


def prepare_train_data(
    pairs_dir: Path,
    candidates_dir: Path,
    cache_root: Path,
    model_ref: str,
    pipe_factory,
    in_channels: int,
    encode_batch_size: int = 16,
    image_rule: ImageRule | None = None,
) -> TrainData:
    """Join pairs to candidates, encode what must be encoded (once, cached) and index the pairs.

    `pipe_factory()` returns the pipeline (text encoders, VAE) and is only called when the cache is built.
    `image_rule` brings images without a stored latent to the training size; without one they are encoded at
    their own size (and must then share it).
    """
    pairs = read_training_pairs(pairs_dir)
    image_ids = sorted(set(pairs.image_id_w.tolist()) | set(pairs.image_id_l.tolist()))
    prompt_of: dict[str, str] = {}
    for pid, text in zip(pairs.prompt_id.tolist(), pairs.prompt.tolist(), strict=True):
        prompt_of.setdefault(pid, text)
    prompt_ids = sorted(prompt_of)
    key = cache_key(model_ref, image_ids, prompt_ids, image_rule)
    cache_dir = Path(cache_root) / key
    if not (cache_dir / "index.json").is_file():
        build_cache(
            cache_dir, pairs, image_ids, prompt_ids, prompt_of, candidates_dir, pipe_factory, in_channels,
            encode_batch_size, image_rule,
        )  # fmt: skip
    return load_cache(cache_dir, pairs)


def build_cache(
    cache_dir: Path,
    pairs: Pairs,
    image_ids: list[str],
    prompt_ids: list[str],
    prompt_of: dict[str, str],
    candidates_dir: Path,
    pipe_factory,
    in_channels: int,
    encode_batch_size: int,
    image_rule: ImageRule | None = None,
) -> None:
    """Write the cache into a temporary directory and rename it into place when complete."""
    table = read_candidates(candidates_dir, image_ids, pairs.source)
    need_vae, latents = stored_latents(table, candidates_dir)
    pipe = pipe_factory()
    if need_vae:
        pngs = read_pngs(candidates_dir, need_vae)
        encoded = vae_encode_pngs(pipe, [pngs[i] for i in need_vae], encode_batch_size, image_rule, need_vae)
        latents.update(zip(need_vae, encoded, strict=True))
    shape = check_latents({i: latents[i] for i in image_ids}, in_channels, candidates_dir)
    embeds, pooled = encode_prompts(pipe, [prompt_of[p] for p in prompt_ids], encode_batch_size)
    # Its own call, so the prompts' batches (and their rounding) are what they were without prompt dropout.
    empty_embeds, empty_pooled = encode_prompts(pipe, [""], 1)
    hw = dict(
        zip(
            table.column("image_id").to_pylist(),
            zip(table.column("height").to_pylist(), table.column("width").to_pylist(), strict=True),
            strict=True,
        )
    )
    if image_rule is not None:  # encoded images now have the training size
        hw.update({i: (image_rule.height, image_rule.width) for i in need_vae})
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.", dir=cache_dir.parent))
    try:
        lat = np.lib.format.open_memmap(tmp / "latents.npy", "w+", np.float32, (len(image_ids), *shape))
        for row, image_id in enumerate(image_ids):
            lat[row] = latents[image_id]
        lat.flush()
        del lat
        np.save(tmp / "sizes.npy", np.array([hw[i] for i in image_ids], dtype=np.int64))
        np.save(tmp / "embeds.npy", embeds.astype(np.float32))
        np.save(tmp / "empty_embeds.npy", empty_embeds.astype(np.float32))
        if pooled is not None and empty_pooled is not None:
            np.save(tmp / "pooled.npy", pooled.astype(np.float32))
            np.save(tmp / "empty_pooled.npy", empty_pooled.astype(np.float32))
        index = {"image_ids": image_ids, "prompt_ids": prompt_ids, "num_vae_encoded": len(need_vae)}
        (tmp / "index.json").write_text(json.dumps(index))
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        tmp.rename(cache_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_cache(cache_dir: Path, pairs: Pairs) -> TrainData:
    index = json.loads((cache_dir / "index.json").read_text())
    image_row = {i: r for r, i in enumerate(index["image_ids"])}
    prompt_row = {p: r for r, p in enumerate(index["prompt_ids"])}
    pooled_path = cache_dir / "pooled.npy"
    empty_pooled_path = cache_dir / "empty_pooled.npy"
    return TrainData(
        latents=np.load(cache_dir / "latents.npy", mmap_mode="r"),
        sizes=np.load(cache_dir / "sizes.npy"),
        embeds=np.load(cache_dir / "embeds.npy", mmap_mode="r"),
        pooled=np.load(pooled_path) if pooled_path.is_file() else None,
        w_index=np.array([image_row[i] for i in pairs.image_id_w], dtype=np.int64),
        l_index=np.array([image_row[i] for i in pairs.image_id_l], dtype=np.int64),
        prompt_index=np.array([prompt_row[p] for p in pairs.prompt_id], dtype=np.int64),
        confidence=pairs.confidence,
        cache_dir=cache_dir,
        num_vae_encoded=int(index["num_vae_encoded"]),
        empty_embeds=np.load(cache_dir / "empty_embeds.npy"),
        empty_pooled=np.load(empty_pooled_path) if empty_pooled_path.is_file() else None,
    )
