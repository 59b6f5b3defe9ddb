"""Trainer data: the join, its checks on bad input, the once-only caches, and the step → pairs/noise functions."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers.configs import run_config
from helpers.numerics import assert_close_at_scale
from PIL import Image

from pipeline.config import ModelSection
from pipeline.models.diffusion import load_pipeline
from pipeline.models.zoo import resolve_pretrained
from pipeline.testing.toy_run import copy_toy_run
from trainer.data import TrainDataError, prepare_train_data, read_training_pairs
from trainer.images import ImageRule
from trainer.sampling import step_noise, step_pairs, step_prompt_dropout


class CountingFactory:
    """The pipeline factory the trainer calls to build its cache; counts calls and text-encoder batches."""

    def __init__(self, family: str = "sd15"):
        self.family = family
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return load_pipeline(ModelSection(pretrained=f"tiny/{self.family}"), device="cpu")


def _prepare(run, factory, family="sd15", rule=None, strategy="majority"):
    return prepare_train_data(
        run / "pairs" / strategy,
        run / "candidates",
        run / "train" / "cache",
        f"tiny/{family}|{resolve_pretrained(f'tiny/{family}')}",
        factory,
        in_channels=4,
        encode_batch_size=8,
        image_rule=rule,
    )


def _rewrite(path, fn):
    table = pq.read_table(path)
    pq.write_table(fn(table), path)


def test_join_uses_stored_latents_and_encodes_each_prompt_once(tmp_path):
    run = copy_toy_run(tmp_path / "run")
    factory = CountingFactory()
    data = _prepare(run, factory)
    pairs = pq.read_table(run / "pairs" / "majority" / "part-0.parquet")
    cands = pq.read_table(run / "candidates" / "part-0.parquet").to_pylist()
    assert len(data) == pairs.num_rows > 0
    assert data.num_vae_encoded == 0
    assert data.embeds.shape[0] == len(set(pairs.column("prompt_id").to_pylist()))
    by_id = {c["image_id"]: c for c in cands}
    # Row 0 is the pair with the smallest (winner, loser) ids, whatever order the vote wrote them in.
    first = min(pairs.to_pylist(), key=lambda r: (r["image_id_w"], r["image_id_l"]))
    batch = data.batch(np.array([0]), torch.device("cpu"))
    expected_w = np.asarray(by_id[first["image_id_w"]]["latent"], np.float32).reshape(4, 16, 16)
    np.testing.assert_array_equal(batch["latents_w"][0].numpy(), expected_w)
    # The embedding is the pipeline's own encode_prompt output for that pair's prompt.
    pipe = factory()
    direct, _ = pipe.encode_prompt([first["prompt"]], pipe.device, 1, False)
    assert_close_at_scale(batch["embeds"][0].numpy(), direct[0].detach().numpy())  # batched vs single encode
    # A second preparation reuses the cache: no pipeline is loaded again.
    calls = factory.calls
    again = _prepare(run, factory)
    assert factory.calls == calls
    assert again.cache_dir == data.cache_dir


def test_pair_order_on_disk_does_not_change_the_training_rows(tmp_path):
    run = copy_toy_run(tmp_path / "run")
    path = run / "pairs" / "majority" / "part-0.parquet"
    before = read_training_pairs(path.parent)
    table = pq.read_table(path)
    reversed_rows = table.take(pa.array(np.arange(table.num_rows)[::-1]))
    path.unlink()
    half = table.num_rows // 2  # and split over two files, as a large vote writes them
    pq.write_table(reversed_rows.slice(half), path.parent / "part-1.parquet")
    pq.write_table(reversed_rows.slice(0, half), path.parent / "part-2.parquet")
    after = read_training_pairs(path.parent)
    assert table.num_rows > 2
    np.testing.assert_array_equal(before.image_id_w, after.image_id_w)
    np.testing.assert_array_equal(before.image_id_l, after.image_id_l)
    np.testing.assert_array_equal(before.prompt, after.prompt)


def test_images_without_latents_are_vae_encoded_once(tmp_path):
    run = copy_toy_run(tmp_path / "run", drop_latents=True)
    factory = CountingFactory()
    data = _prepare(run, factory)
    assert data.num_vae_encoded == data.latents.shape[0] > 0
    assert data.latent_shape == (4, 16, 16)
    # Row 0 of the cache is the VAE posterior mean of that image's PNG, times the scaling factor.
    cands = {c["image_id"]: c for c in pq.read_table(run / "candidates" / "part-0.parquet").to_pylist()}
    image_id = sorted(cands)[0]
    pipe = factory()
    pixels = pipe.image_processor.preprocess(Image.open(io.BytesIO(cands[image_id]["image"])).convert("RGB"))
    with torch.no_grad():
        direct = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    # A batched and a single encode round differently (tests/numerics.py): equal relative to the latents' scale.
    assert_close_at_scale(data.latents[0], direct[0].numpy())
    calls = factory.calls
    _prepare(run, factory)
    assert factory.calls == calls, "the VAE must not run again for a cached set"


def test_sdxl_cache_holds_pooled_embeddings_and_time_ids(tmp_path):
    run = copy_toy_run(tmp_path / "run", family="sdxl")
    data = _prepare(run, CountingFactory("sdxl"), family="sdxl")
    assert data.pooled is not None and data.pooled.shape == (data.embeds.shape[0], 32)
    assert data.embeds.shape[-1] == 64  # both text encoders' hidden states, concatenated
    batch = data.batch(np.array([0, 1]), torch.device("cpu"))
    torch.testing.assert_close(batch["time_ids"][0], torch.tensor([64.0, 64.0, 0.0, 0.0, 64.0, 64.0]))


def test_missing_image_ids_are_named(tmp_path):
    run = copy_toy_run(tmp_path / "run")
    path = run / "pairs" / "majority" / "part-0.parquet"
    _rewrite(
        path,
        lambda t: t.set_column(
            t.schema.get_field_index("image_id_l"),
            t.schema.field("image_id_l"),
            pa.array(["ghost-1", *t.column("image_id_l").to_pylist()[1:]]),
        ),
    )
    with pytest.raises(TrainDataError, match=r"1 image_id\(s\) absent from candidates.*ghost-1"):
        _prepare(run, CountingFactory())


def test_empty_pairs_table_is_an_error(tmp_path):
    run = copy_toy_run(tmp_path / "run")
    _rewrite(run / "pairs" / "majority" / "part-0.parquet", lambda t: t.slice(0, 0))
    with pytest.raises(TrainDataError, match="is empty"):
        _prepare(run, CountingFactory())
    (run / "pairs" / "majority" / "part-0.parquet").unlink()
    with pytest.raises(TrainDataError, match=r"no part-\*\.parquet files in pairs"):
        _prepare(run, CountingFactory())


def test_mismatched_latent_shapes_are_named(tmp_path):
    run = copy_toy_run(tmp_path / "run")
    path = run / "candidates" / "part-0.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    odd = rows[1]
    odd["latent"] = odd["latent"][: 4 * 8 * 8]
    odd["latent_shape"] = [4, 8, 8]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    with pytest.raises(TrainDataError, match="mismatched shape") as err:
        _prepare(run, CountingFactory())
    assert odd["image_id"] in str(err.value)


def test_latent_length_must_match_its_shape(tmp_path):
    run = copy_toy_run(tmp_path / "run")
    path = run / "candidates" / "part-0.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0]["latent"] = rows[0]["latent"][:-1]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    with pytest.raises(TrainDataError, match="latent has 1023 values but latent_shape"):
        _prepare(run, CountingFactory())


def test_step_pairs_cover_each_epoch_and_split_cleanly():
    n, gb = 10, 4
    stream = np.concatenate([step_pairs(s, gb, n, seed=3) for s in range(5)])  # 20 = two epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:]), "each epoch is reshuffled"
    np.testing.assert_array_equal(step_pairs(7, gb, n, 3), step_pairs(7, gb, n, 3))
    assert not np.array_equal(step_pairs(0, gb, n, 3), step_pairs(0, gb, n, 4))
    # Two processes taking halves of a global batch of 4 see what one process of batch 4 sees.
    halves = np.concatenate([step_pairs(2, 4, n, 3)[:2], step_pairs(2, 4, n, 3)[2:]])
    np.testing.assert_array_equal(halves, step_pairs(2, 4, n, 3))


def test_step_noise_is_a_function_of_seed_step_and_stream():
    a = step_noise(5, 3, (4, 2, 2), 1000, seed=1)
    b = step_noise(5, 3, (4, 2, 2), 1000, seed=1)
    torch.testing.assert_close(a[0], b[0])
    assert torch.equal(a[1], b[1]) and a[1].min() >= 0 and a[1].max() < 1000
    assert not torch.equal(step_noise(6, 3, (4, 2, 2), 1000, 1)[0], a[0])
    assert not torch.equal(step_noise(5, 3, (4, 2, 2), 1000, 1, stream=1)[0], a[0])
    # Two micro-batches of 3 draw exactly what one batch of 6 draws (accumulation and processes agree).
    whole = step_noise(1, 6, (4, 2, 2), 1000, seed=1)
    parts = [step_noise(s, 3, (4, 2, 2), 1000, seed=1) for s in (2, 3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), whole[0])
    assert torch.equal(torch.cat([p[1] for p in parts]), whole[1])


def test_cli_reports_bad_tables_with_exit_code_2(tmp_path, capsys):
    from trainer.train import main

    run = copy_toy_run(tmp_path / "run")
    _rewrite(run / "pairs" / "majority" / "part-0.parquet", lambda t: t.slice(0, 0))
    cfg = run_config(run, "train.tracker=none")
    config = tmp_path / "cfg.yaml"
    config.write_text(cfg.to_yaml())
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "is empty" in err and str(run / "pairs" / "majority") in err


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_empty_prompt_is_cached_once_and_replaces_dropped_prompts(tmp_path, family):
    """Prompt dropout trains on the pipeline's own encoding of "" (SDXL: both encoders and the pooled output)."""
    run = copy_toy_run(tmp_path / "run", family=family)
    factory = CountingFactory(family)
    data = _prepare(run, factory, family=family)
    pipe = factory()
    if family == "sdxl":
        empty, _, empty_pooled, _ = pipe.encode_prompt(
            prompt=[""], device=pipe.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
    else:
        empty, _ = pipe.encode_prompt([""], pipe.device, 1, False)
    rows = np.array([0, 1, 2])
    kept = data.batch(rows, torch.device("cpu"))
    mixed = data.batch(rows, torch.device("cpu"), empty_prompt=np.array([False, True, False]))
    assert_close_at_scale(mixed["embeds"][1].numpy(), empty[0].detach().numpy())
    assert not torch.equal(kept["embeds"][1], mixed["embeds"][1])
    for i in (0, 2):
        assert torch.equal(kept["embeds"][i], mixed["embeds"][i])
    if family == "sdxl":
        assert_close_at_scale(mixed["pooled"][1].numpy(), empty_pooled[0].detach().numpy())
        assert torch.equal(kept["pooled"][0], mixed["pooled"][0])
        assert torch.equal(kept["time_ids"], mixed["time_ids"])
    torch.testing.assert_close(kept["latents_w"], mixed["latents_w"], rtol=0, atol=0)


def test_step_prompt_dropout_rate_determinism_and_splits():
    draws = np.concatenate([step_prompt_dropout(s, 8, seed=5, rate=0.2) for s in range(500)])
    # 4000 draws: within 4 standard deviations of the rate (deterministic for the seed, so never flaky).
    assert abs(draws.mean() - 0.2) < 4 * np.sqrt(0.2 * 0.8 / draws.size)
    np.testing.assert_array_equal(step_prompt_dropout(7, 8, 5, 0.2), step_prompt_dropout(7, 8, 5, 0.2))
    assert not np.array_equal(
        np.concatenate([step_prompt_dropout(s, 8, 5, 0.5) for s in range(4)]),
        np.concatenate([step_prompt_dropout(s, 8, 6, 0.5) for s in range(4)]),
    )
    # Two micro-batches of 4 drop exactly what one batch of 8 drops (accumulation and processes agree).
    parts = np.concatenate([step_prompt_dropout(s, 4, 5, 0.5) for s in (2, 3)])
    np.testing.assert_array_equal(parts, step_prompt_dropout(1, 8, 5, 0.5))
    assert not step_prompt_dropout(3, 8, 5, 0.0).any()
    assert step_prompt_dropout(3, 8, 5, 1.0).all()


def test_imported_images_of_many_sizes_become_one_training_size(tmp_path):
    """Pick-a-Pic as it is: JPEGs of several sizes, resized and cropped to the run's resolution before encoding."""
    from helpers.relabel import relabel_run

    from pipeline.voting import run_vote

    cfg = relabel_run(tmp_path)
    run = cfg.output_dir
    run_vote(cfg, "human")
    sizes = {(c["width"], c["height"]) for c in pq.read_table(run / "candidates").to_pylist()}
    assert len(sizes) == 4, sizes
    rule = ImageRule(32, 32)
    factory = CountingFactory()
    data = _prepare(run, factory, rule=rule, strategy="human")
    assert data.num_vae_encoded == data.latents.shape[0] > 0
    pipe = factory()
    assert data.latent_shape == (4, 32 // pipe.vae_scale_factor, 32 // pipe.vae_scale_factor)
    assert (data.sizes == 32).all()  # SDXL's time ids: the training size, as the reference conditions on
    # Without the rule the sizes stay mixed, and mixed sizes are still an error naming them.
    with pytest.raises(TrainDataError, match="mismatched shape"):
        _prepare(run, factory, rule=None, strategy="human")
