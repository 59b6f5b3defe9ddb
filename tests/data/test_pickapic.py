"""Pick-a-Pic / diffusers-DPO layout: import gives conforming candidates and human labels, export round-trips."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.data.pickapic import (
    HUMAN_PAIRS_SCHEMA,
    PickapicError,
    export_pairs,
    human_pairs_to_pairs,
    import_pickapic,
)
from pipeline.io import write_parquet_atomic
from pipeline.schema import CANDIDATE_FIELDS, PAIR_FIELDS, make_prompt_id
from pipeline.testing.candidates import random_candidates, solid_png
from pipeline.voting.pairing import pair_id


def jpeg_bytes(rgb: tuple[int, int, int], size: tuple[int, int] = (12, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="JPEG")
    return buf.getvalue()


def pickapic_table() -> pa.Table:
    """Four rankings of two captions; image "a" appears in two rankings, one ranking is a tie."""
    imgs = {k: jpeg_bytes(c) for k, c in {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255)}.items()}
    rows = [
        ("a cat", "a", "b", 1.0, 0.0),
        ("a cat", "c", "a", 0.0, 1.0),
        ("a dog", "b", "c", 0.5, 0.5),
        ("a  dog ", "c", "b", 0.0, 1.0),  # same prompt as "a dog" up to whitespace
    ]
    return pa.table(
        {
            "caption": [r[0] for r in rows],
            "jpg_0": [imgs[r[1]] for r in rows],
            "jpg_1": [imgs[r[2]] for r in rows],
            "label_0": [r[3] for r in rows],
            "label_1": [r[4] for r in rows],
            "image_0_uid": [f"{' '.join(r[0].split())}-{r[1]}" for r in rows],
            "image_1_uid": [f"{' '.join(r[0].split())}-{r[2]}" for r in rows],
            "model_0": ["sdxl"] * 4,
            "model_1": ["sd15"] * 4,
        }
    )


def test_import_conforms_and_dedupes(tmp_path):
    path = tmp_path / "pickapic_sample.parquet"
    pq.write_table(pickapic_table(), path)
    candidates, human = import_pickapic(path)
    assert candidates.schema == pa.schema(CANDIDATE_FIELDS)
    assert human.schema == HUMAN_PAIRS_SCHEMA
    # "a cat": a, b, c ; "a dog": b, c (uids differ by caption, so 5 distinct images)
    assert candidates.num_rows == 5
    assert set(candidates.column("source").to_pylist()) == {"pickapic_sample"}
    assert candidates.column("latent").null_count == 5
    assert set(candidates.column("height").to_pylist()) == {10}
    assert set(candidates.column("width").to_pylist()) == {12}
    h = human.to_pylist()
    assert h[0]["image_id_0"] == h[1]["image_id_1"]  # image "a" of "a cat" is one candidate
    assert [r["label_0"] for r in h] == [1.0, 0.0, 0.5, 0.0]
    assert h[2]["prompt_id"] == h[3]["prompt_id"] == make_prompt_id("a dog")
    ids = set(candidates.column("image_id").to_pylist())
    assert {r["image_id_0"] for r in h} | {r["image_id_1"] for r in h} == ids
    # Importing again gives the same ids: relabelled runs can be joined with earlier ones.
    again, _ = import_pickapic(pickapic_table(), source="pickapic_sample")
    assert set(again.column("image_id").to_pylist()) == ids


def test_import_struct_images_without_uids_or_label_1():
    t = pickapic_table().drop_columns(["image_0_uid", "image_1_uid", "label_1", "model_0", "model_1"])
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for col in ("jpg_0", "jpg_1"):
        values = [{"bytes": b, "path": None} for b in t.column(col).to_pylist()]
        t = t.set_column(t.column_names.index(col), col, pa.array(values, struct))
    candidates, human = import_pickapic(pl.from_arrow(t))
    # Without uids an image is keyed by its bytes: a, b, c under "a cat" and b, c under "a dog".
    assert candidates.num_rows == 5
    assert set(candidates.column("model").to_pylist()) == {"pickapic"}
    assert human.column("label_1").to_pylist() == [0.0, 1.0, 0.5, 1.0]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.drop_columns(["jpg_1"]), "missing column(s) ['jpg_1']"),
        (lambda t: t.slice(0, 0), "no rows"),
        (lambda t: t.set_column(3, "label_0", pa.array([1.0, 2.0, 0.5, 0.0])), "row 1"),
        (lambda t: t.set_column(1, "jpg_0", pa.array([b"x", b"y", b"z", b"w"])), "not a readable image"),
        (lambda t: t.set_column(0, "caption", pa.array(["a", " ", "b", "c"])), "row 1: empty"),
    ],
)
def test_import_bad_input_names_the_problem(mutate, message):
    with pytest.raises(PickapicError) as err:
        import_pickapic(mutate(pickapic_table()))
    assert message in str(err.value)


def truncated_jpeg() -> bytes:
    """A noisy JPEG cut off halfway: PIL reads its header (and size) fine; decoding it fails."""
    noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG")
    data = buf.getvalue()[: len(buf.getvalue()) // 2]
    with Image.open(io.BytesIO(data)) as header_only:
        assert header_only.size == (64, 64)
    return data


def test_a_truncated_image_is_found_at_import_not_in_a_scorer():
    table = pickapic_table()
    jpg_1 = table.column("jpg_1").to_pylist()
    jpg_1[0] = truncated_jpeg()
    table = table.set_column(table.column_names.index("jpg_1"), "jpg_1", pa.array(jpg_1))
    with pytest.raises(PickapicError, match=r"column 'jpg_1', row 0: not a readable image"):
        import_pickapic(table)
    from pipeline.data.pickapic import read_pickapic

    out = read_pickapic(table, on_bad_image="quarantine")
    assert out.rejected.num_rows == 1 and "row 0" in out.rejected.column("error")[0].as_py()
    assert out.counts == {
        "rows": 4,
        "rows_dropped_identical_images": 0,
        "rows_dropped_unreadable_image": 1,
        "rows_kept": 3,
    }
    bad = out.rejected.column("image_id")[0].as_py()
    kept = out.human_pairs.to_pylist()
    assert len(kept) == 3 and bad not in {r["image_id_0"] for r in kept} | {r["image_id_1"] for r in kept}
    assert bad not in out.candidates.column("image_id").to_pylist()


@pytest.mark.parametrize("how", ["same-bytes", "are_different-false"])
def test_a_row_showing_one_image_twice_is_no_preference(how):
    table = pickapic_table()
    if how == "same-bytes":  # the uids differ, the pictures do not
        jpg_1 = table.column("jpg_1").to_pylist()
        jpg_1[0] = table.column("jpg_0")[0].as_py()
        table = table.set_column(table.column_names.index("jpg_1"), "jpg_1", pa.array(jpg_1))
    else:
        table = table.append_column("are_different", pa.array([False, True, True, True]))
    _, human = import_pickapic(table)
    assert human.num_rows == 3
    from pipeline.data.pickapic import read_pickapic

    out = read_pickapic(table)
    assert out.counts["rows_dropped_identical_images"] == 1 and out.counts["rows_kept"] == 3
    assert [r["label_0"] for r in out.human_pairs.to_pylist()] == [0.0, 0.5, 0.0]  # row 0 is gone


def test_human_pairs_to_pairs_drops_ties_and_contradictions():
    _, human = import_pickapic(pickapic_table())
    pairs = human_pairs_to_pairs(human)
    assert pairs.schema == pa.schema(PAIR_FIELDS)
    rows = pairs.to_pylist()
    h = human.to_pylist()
    # Row 0: image 0 wins; row 1: image 1 wins; row 2 is a tie; row 3 (c vs b, b wins) contradicts nothing.
    assert [(r["image_id_w"], r["image_id_l"]) for r in rows] == [
        (h[0]["image_id_0"], h[0]["image_id_1"]),
        (h[1]["image_id_1"], h[1]["image_id_0"]),
        (h[3]["image_id_1"], h[3]["image_id_0"]),
    ]
    assert rows[0]["pair_id"] == pair_id(rows[0]["image_id_l"], rows[0]["image_id_w"])
    # The same two images labelled both ways: neither label is kept.
    flipped = human.slice(0, 1).set_column(4, "label_0", pa.array([0.0], pa.float32()))
    flipped = flipped.set_column(5, "label_1", pa.array([1.0], pa.float32())).cast(HUMAN_PAIRS_SCHEMA)
    both = human_pairs_to_pairs(pa.concat_tables([human.slice(0, 1), flipped]))
    assert both.num_rows == 0


def write_pairs(tmp_path, candidates: pa.Table) -> pa.Table:
    """Hand-made pairs over the first prompt's candidates: 0 beats 1, 2 beats 0 (winner ids both ways round)."""
    ids = candidates.column("image_id").to_pylist()[:3]
    prompt_id = candidates.column("prompt_id")[0].as_py()
    prompt = candidates.column("prompt")[0].as_py()
    wl = [(ids[0], ids[1]), (ids[2], ids[0])]
    pairs = pa.table(
        {
            "pair_id": [pair_id(w, lo) for w, lo in wl],
            "prompt_id": [prompt_id] * 2,
            "prompt": [prompt] * 2,
            "image_id_w": [w for w, _ in wl],
            "image_id_l": [lo for _, lo in wl],
            "strategy": ["majority"] * 2,
            "votes_w": [2, 3],
            "votes_l": [1, 0],
            "n_metrics": [3, 3],
            "confidence": [2 / 3, 1.0],
        },
        schema=pa.schema(PAIR_FIELDS),
    )
    write_parquet_atomic(pairs, tmp_path / "pairs" / "part-0.parquet")
    write_parquet_atomic(candidates, tmp_path / "candidates" / "part-0.parquet")
    return pairs


def test_export_round_trips_through_import(tmp_path):
    candidates = random_candidates(2, 4, ["a", "b", "c"])
    pairs = write_pairs(tmp_path, candidates)
    out = export_pairs(tmp_path / "pairs", tmp_path / "candidates", tmp_path / "export" / "pairs.parquet")
    exported = pq.read_table(out)
    assert exported.column_names[:5] == ["caption", "jpg_0", "jpg_1", "label_0", "label_1"]
    rows = {r["pair_id"]: r for r in exported.to_pylist()}
    image_of = dict(
        zip(candidates.column("image_id").to_pylist(), candidates.column("image").to_pylist(), strict=True)
    )
    labels_seen = set()
    for p in pairs.to_pylist():
        r = rows[p["pair_id"]]
        winner_slot = 0 if r["label_0"] == 1.0 else 1
        labels_seen.add(winner_slot)
        assert r[f"jpg_{winner_slot}"] == image_of[p["image_id_w"]]
        assert r[f"jpg_{1 - winner_slot}"] == image_of[p["image_id_l"]]
        assert r["best_image_uid"] == p["image_id_w"] and r["caption"] == p["prompt"]
        assert r["label_0"] + r["label_1"] == 1.0
    assert labels_seen == {0, 1}  # the winner is not always in the same slot

    # Import of our export gives back the same winners (as image bytes) under the same captions.
    imported, human = import_pickapic(out, source="ours")
    back = human_pairs_to_pairs(human)
    bytes_of = dict(
        zip(imported.column("image_id").to_pylist(), imported.column("image").to_pylist(), strict=True)
    )
    got = {(bytes_of[r["image_id_w"]], bytes_of[r["image_id_l"]]) for r in back.to_pylist()}
    want = {(image_of[p["image_id_w"]], image_of[p["image_id_l"]]) for p in pairs.to_pylist()}
    assert got == want


def test_export_refuses_pairs_with_missing_images(tmp_path):
    candidates = random_candidates(1, 4, ["a"])
    write_pairs(tmp_path, candidates)
    write_parquet_atomic(candidates.slice(1), tmp_path / "candidates" / "part-0.parquet")
    out = tmp_path / "export.parquet"
    with pytest.raises(PickapicError, match="2 of 2 pairs name images missing"):
        export_pairs(tmp_path / "pairs", tmp_path / "candidates", out)
    assert not out.exists()


def test_png_helper_is_an_image():
    assert Image.open(io.BytesIO(solid_png((1, 2, 3)))).size == (8, 8)
    assert np.asarray(Image.open(io.BytesIO(solid_png((1, 2, 3)))))[0, 0].tolist() == [1, 2, 3]
