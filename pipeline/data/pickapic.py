"""Import from and export to the Pick-a-Pic / diffusers-DPO layout, so our pairs and theirs are interchangeable.

The layout (Pick-a-Pic v2, `train_diffusion_dpo.py` in diffusers): one row per labelled pair with `caption`,
`jpg_0`, `jpg_1` (encoded image bytes), `label_0`, `label_1` (1 = preferred, 0 = not, 0.5 = tie), optionally
`image_0_uid`, `image_1_uid`, `model_0`, `model_1`. `jpg_*` may also be a `{bytes, path}` struct, as the
`datasets` Image feature stores it.

Public functions (the stage-1 relabel mode and the trainer call these):

- `import_pickapic(path_or_table, source=None) -> tuple[pa.Table, pa.Table]`
  `path_or_table`: a parquet file, a directory of parquet files, a pyarrow Table or a polars DataFrame.
  Returns `(candidates, human_pairs)`:
  - `candidates` has exactly the fixed candidate fields of `pipeline.schema.CANDIDATE_FIELDS` (no score
    columns), one row per distinct image: `latent`/`latent_shape` null, `source` = the dataset name
    (`source`, else the file or directory stem, else "pickapic"), `model` = `model_0`/`model_1` when present
    else the source, `seed` = -1, `round` = 0, `num_inference_steps` = 0 and `guidance_scale` = 0.0 (unknown),
    `height`/`width` of the image, decoded whole at import, `image` = the bytes as imported (JPEG for Pick-a-Pic).
    `image_id` = `make_image_id(prompt_id, "<source>:<key>", -1)` with key = the dataset's image uid when
    present, else a hash of the bytes: importing twice gives the same ids, and an image repeated across
    rankings becomes one candidate.
  - `human_pairs` (`HUMAN_PAIRS_SCHEMA`): `prompt_id`, `prompt`, `image_id_0`, `image_id_1`, `label_0`,
    `label_1` (float32), one row per input row, in input order, except rows whose two images are the same
    (same id or bytes, or `are_different` false): they state no preference and are dropped.
  An image that cannot be decoded is an error naming its column and row. `read_pickapic(..., on_bad_image=
  "quarantine")` (relabel mode with `scoring.on_error: quarantine`) sets such images aside instead, drops the
  rows showing them and counts every drop.
- `human_pairs_to_pairs(human_pairs, strategy="human") -> pa.Table` turns the human labels into our pairs schema
  (`pairs_schema([])`, ties and contradictory labels dropped, `pair_id` as in `pipeline.voting.pairing.pair_id`) so our trainer can consume their data: write it to
  `<run>/pairs/human/` beside the imported candidates.
- `export_pairs(pairs_dir, candidates_dir, out_path) -> Path` writes our pairs as one Pick-a-Pic parquet file:
  `caption`, `jpg_0`, `jpg_1`, `label_0`, `label_1`, `image_0_uid`, `image_1_uid`, `best_image_uid`,
  `model_0`, `model_1`, `pair_id`, `strategy`, `confidence`. Image 0 is the pair's image with the smaller id,
  so `label_0` is 1 or 0 depending on the vote (both occur), never a fixed position. Streams with polars
  (lazy join, `sink_parquet`) and writes atomically.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.io import atomic_path
from pipeline.paths import TABLE_GLOB, table_files
from pipeline.schema import CANDIDATE_FIELDS, PAIR_FIELDS, make_image_id, make_prompt_id
from pipeline.voting.pairing import pair_id

REQUIRED_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0")

HUMAN_PAIRS_SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("image_id_0", pa.string(), nullable=False),
        pa.field("image_id_1", pa.string(), nullable=False),
        pa.field("label_0", pa.float32(), nullable=False),
        pa.field("label_1", pa.float32(), nullable=False),
    ]
)


REJECTED_SCHEMA = pa.schema([*CANDIDATE_FIELDS, pa.field("error", pa.string(), nullable=False)])


class PickapicError(ValueError):
    """Input that is not in the Pick-a-Pic layout; the message names the file, column and row."""


def _read_table(path_or_table: str | Path | pa.Table | pl.DataFrame) -> tuple[pa.Table, str, str]:
    """The input as one arrow table, plus a name for messages and a default source name."""
    if isinstance(path_or_table, pa.Table):
        return path_or_table, "<table>", "pickapic"
    if isinstance(path_or_table, pl.DataFrame):
        return path_or_table.to_arrow(), "<table>", "pickapic"
    from pipeline.data.embedded import resolve_data_path

    path = Path(resolve_data_path(str(path_or_table)))
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise PickapicError(f"{path}: no *.parquet files in this directory")
        return pa.concat_tables([pq.read_table(f) for f in files]), str(path), path.name
    if not path.is_file():
        raise PickapicError(f"{path}: no such file or directory")
    return pq.read_table(path), str(path), path.stem


def _image_bytes(table: pa.Table, column: str, where: str) -> list[bytes]:
    """Raw bytes of an image column stored either as binary or as a `{bytes, path}` struct."""
    col = table.column(column)
    if pa.types.is_struct(col.type):
        if col.type.get_field_index("bytes") < 0:
            raise PickapicError(f"{where}: column {column!r} is a struct without a 'bytes' field")
        col = pa.chunked_array([c.field("bytes") for c in col.chunks], col.type.field("bytes").type)
    if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
        raise PickapicError(f"{where}: column {column!r} must hold image bytes, found {col.type}")
    values = col.to_pylist()
    for row, value in enumerate(values):
        if not value:
            raise PickapicError(f"{where}: column {column!r}, row {row}: empty or missing image")
    return values


def _labels(table: pa.Table, where: str) -> tuple[list[float | None], list[float | None]]:
    try:
        label_0 = table.column("label_0").cast(pa.float32()).to_pylist()
        label_1 = (
            table.column("label_1").cast(pa.float32()).to_pylist()
            if "label_1" in table.column_names
            else [None if v is None else 1.0 - v for v in label_0]
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise PickapicError(f"{where}: label columns must be numeric: {exc}") from None
    for row, (a, b) in enumerate(zip(label_0, label_1, strict=True)):
        if a is None or b is None or not (0.0 <= a <= 1.0 and 0.0 <= b <= 1.0):
            raise PickapicError(f"{where}: row {row}: labels must lie in [0, 1], found ({a}, {b})")
    return label_0, label_1


def _decode(data: bytes) -> tuple[int, int]:
    """(height, width) of an image decoded whole: a file truncated after its header fails here, not in a scorer."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        width, height = img.size
    return height, width


@dataclass
class PickapicImport:
    """A Pick-a-Pic table read for relabelling: what can be scored, the labels to keep, and what was set aside."""

    candidates: pa.Table  # CANDIDATE_FIELDS, one row per distinct decodable image
    human_pairs: pa.Table  # HUMAN_PAIRS_SCHEMA, the kept input rows in input order
    rejected: pa.Table  # CANDIDATE_FIELDS + `error`: images that cannot be decoded (quarantine only)
    counts: dict[str, int] = field(default_factory=dict)


def read_pickapic(
    path_or_table: str | Path | pa.Table | pl.DataFrame,
    source: str | None = None,
    on_bad_image: str = "fail",
) -> PickapicImport:
    """Read a Pick-a-Pic style table; see the module docstring for the columns.

    Every image is decoded whole. One that cannot be (truncated, not an image) is an error naming its column and
    row with `on_bad_image="fail"`; with `"quarantine"` it goes to `rejected` and the rows showing it are dropped.
    A row whose two images are the same (same id or bytes, or `are_different` false) says nothing about a
    preference: it is dropped. `counts` says how many rows each rule dropped.
    """
    if on_bad_image not in ("fail", "quarantine"):
        raise ValueError(f"on_bad_image must be 'fail' or 'quarantine', got {on_bad_image!r}")
    table, where, default_source = _read_table(path_or_table)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise PickapicError(
            f"{where}: missing column(s) {missing} of the Pick-a-Pic layout; found {table.column_names}"
        )
    if table.num_rows == 0:
        raise PickapicError(f"{where}: the table has no rows")
    source = source or default_source
    captions = table.column("caption").to_pylist()
    label_0, label_1 = _labels(table, where)

    candidates: dict[str, dict] = {}
    rejected: dict[str, dict] = {}
    image_ids: dict[int, list[str]] = {0: [], 1: []}
    digests: dict[int, list[str]] = {0: [], 1: []}
    prompt_ids: list[str] = []
    for row, caption in enumerate(captions):
        if not isinstance(caption, str) or not caption.strip():
            raise PickapicError(f"{where}: column 'caption', row {row}: empty or missing caption")
        prompt_ids.append(make_prompt_id(caption))
    for side in (0, 1):
        images = _image_bytes(table, f"jpg_{side}", where)
        uid_col = f"image_{side}_uid"
        uids = table.column(uid_col).to_pylist() if uid_col in table.column_names else None
        model_col = f"model_{side}"
        models = table.column(model_col).to_pylist() if model_col in table.column_names else None
        for row, data in enumerate(images):
            digest = hashlib.sha1(data).hexdigest()
            key = str(uids[row]) if uids and uids[row] else digest
            image_id = make_image_id(prompt_ids[row], f"{source}:{key}", -1)
            image_ids[side].append(image_id)
            digests[side].append(digest)
            if image_id in candidates or image_id in rejected:
                continue
            entry = {
                "image_id": image_id,
                "prompt_id": prompt_ids[row],
                "prompt": captions[row],
                "source": source,
                "model": str(models[row]) if models and models[row] else source,
                "round": 0,
                "seed": -1,
                "num_inference_steps": 0,
                "guidance_scale": 0.0,
                "image": data,
                "latent": None,
                "latent_shape": None,
            }
            try:
                entry["height"], entry["width"] = _decode(data)
            except Exception as exc:
                message = f"{where}: column 'jpg_{side}', row {row}: not a readable image ({exc})"
                if on_bad_image == "fail":
                    raise PickapicError(
                        message + "; set scoring.on_error: quarantine to set it aside"
                    ) from None
                rejected[image_id] = {**entry, "height": 0, "width": 0, "error": message}
                continue
            candidates[image_id] = entry

    different = table.column("are_different").to_pylist() if "are_different" in table.column_names else None
    keep: list[int] = []
    counts = {"rows": table.num_rows, "rows_dropped_identical_images": 0, "rows_dropped_unreadable_image": 0}
    for row in range(table.num_rows):
        if image_ids[0][row] in rejected or image_ids[1][row] in rejected:
            counts["rows_dropped_unreadable_image"] += 1
        elif (
            image_ids[0][row] == image_ids[1][row]
            or digests[0][row] == digests[1][row]
            or (different is not None and different[row] is not None and not different[row])
        ):
            counts["rows_dropped_identical_images"] += 1
        else:
            keep.append(row)
    counts["rows_kept"] = len(keep)
    human_pairs = pa.Table.from_pydict(
        {
            "prompt_id": [prompt_ids[r] for r in keep],
            "prompt": [captions[r] for r in keep],
            "image_id_0": [image_ids[0][r] for r in keep],
            "image_id_1": [image_ids[1][r] for r in keep],
            "label_0": [label_0[r] for r in keep],
            "label_1": [label_1[r] for r in keep],
        },
        schema=HUMAN_PAIRS_SCHEMA,
    )
    return PickapicImport(
        candidates=pa.Table.from_pylist(list(candidates.values()), schema=pa.schema(CANDIDATE_FIELDS)),
        human_pairs=human_pairs,
        rejected=pa.Table.from_pylist(list(rejected.values()), schema=REJECTED_SCHEMA),
        counts=counts,
    )


def import_pickapic(
    path_or_table: str | Path | pa.Table | pl.DataFrame, source: str | None = None
) -> tuple[pa.Table, pa.Table]:
    """(candidates without scores, human pairs) of a Pick-a-Pic style table; an unreadable image is an error.

    See `read_pickapic` for the rules (rows showing one image twice are dropped).
    """
    out = read_pickapic(path_or_table, source)
    return out.candidates, out.human_pairs


def human_pairs_to_pairs(human_pairs: pa.Table, strategy: str = "human") -> pa.Table:
    """Human labels as our pairs schema (no vote columns): ties and same-image rows are dropped."""
    hp = pl.from_arrow(human_pairs)
    assert isinstance(hp, pl.DataFrame)
    decided = hp.filter(
        (pl.col("label_0") != pl.col("label_1")) & (pl.col("image_id_0") != pl.col("image_id_1"))
    )
    first_wins = pl.col("label_0") > pl.col("label_1")
    pairs = decided.select(
        "prompt_id",
        "prompt",
        image_id_w=pl.when(first_wins).then("image_id_0").otherwise("image_id_1"),
        image_id_l=pl.when(first_wins).then("image_id_1").otherwise("image_id_0"),
    ).unique(subset=["image_id_w", "image_id_l"], keep="first", maintain_order=True)
    pair_ids = [
        pair_id(w, lo)
        for w, lo in zip(pairs["image_id_w"].to_list(), pairs["image_id_l"].to_list(), strict=True)
    ]
    pairs = pairs.with_columns(
        pair_id=pl.Series(pair_ids, dtype=pl.String),
        strategy=pl.lit(strategy),
        votes_w=pl.lit(1, pl.Int16),
        votes_l=pl.lit(0, pl.Int16),
        n_metrics=pl.lit(1, pl.Int16),
        confidence=pl.lit(1.0, pl.Float32),
    )
    # The same two images labelled both ways by different users: keep neither, a contradiction is no signal.
    contradicted = pairs.join(
        pairs.select(image_id_w="image_id_l", image_id_l="image_id_w"), on=["image_id_w", "image_id_l"]
    )
    pairs = pairs.join(contradicted.select("pair_id"), on="pair_id", how="anti")
    order = [f.name for f in PAIR_FIELDS]
    return pairs.select(order).to_arrow().cast(pa.schema(PAIR_FIELDS))


def export_pairs(pairs_dir: str | Path, candidates_dir: str | Path, out_path: str | Path) -> Path:
    """Write the pairs in `pairs_dir` with their images from `candidates_dir` as one Pick-a-Pic parquet file."""
    pairs_dir, candidates_dir, out_path = Path(pairs_dir), Path(candidates_dir), Path(out_path)
    for d in (pairs_dir, candidates_dir):
        if not table_files(d):
            raise PickapicError(f"{d}: no {TABLE_GLOB} files to export from")
    pairs = pl.scan_parquet(table_files(pairs_dir))
    images = pl.scan_parquet(table_files(candidates_dir)).select("image_id", "image", "model")
    first_is_w = pl.col("image_id_w") < pl.col("image_id_l")
    rows = (
        pairs.select(
            "pair_id",
            "strategy",
            "confidence",
            "image_id_w",
            caption=pl.col("prompt"),
            image_0_uid=pl.when(first_is_w).then("image_id_w").otherwise("image_id_l"),
            image_1_uid=pl.when(first_is_w).then("image_id_l").otherwise("image_id_w"),
            label_0=first_is_w.cast(pl.Float64),
            label_1=(~first_is_w).cast(pl.Float64),
        )
        .join(
            images.rename({"image_id": "image_0_uid", "image": "jpg_0", "model": "model_0"}), on="image_0_uid"
        )
        .join(
            images.rename({"image_id": "image_1_uid", "image": "jpg_1", "model": "model_1"}), on="image_1_uid"
        )
        .select(
            "caption",
            "jpg_0",
            "jpg_1",
            "label_0",
            "label_1",
            "image_0_uid",
            "image_1_uid",
            pl.col("image_id_w").alias("best_image_uid"),
            "model_0",
            "model_1",
            "pair_id",
            "strategy",
            "confidence",
        )
    )
    n_pairs = pairs.select(pl.len()).collect().item()
    with atomic_path(out_path) as tmp:
        rows.sink_parquet(tmp)
        n_out = pl.scan_parquet(tmp).select(pl.len()).collect().item()
        if n_out != n_pairs:
            raise PickapicError(
                f"{pairs_dir}: {n_pairs - n_out} of {n_pairs} pairs name images missing from {candidates_dir}"
            )
    return out_path
