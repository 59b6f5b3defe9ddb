"""Stage 1 without Ray: planning, the generate and score callables on dict batches, the exactly-once store."""

from __future__ import annotations

import glob
import io

import datasets
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from PIL import Image
from test_stage1_helpers import make_scorer, read_rows, tiny_config

from pipeline.schema import candidates_schema, make_image_id, make_prompt_id
from pipeline.stage1_batches import (
    ERROR_COLUMN,
    GenerateBatch,
    ScoreBatch,
    ScoringError,
    Stage1Error,
    plan_items,
)
from pipeline.stage1_store import CandidateStore


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return tiny_config(tmp_path_factory.mktemp("stage1"))


@pytest.fixture(scope="module")
def generated(cfg):
    """Four images of two prompts, generated once for the module by the real tiny SD1.5 pipeline."""
    prompts = [(make_prompt_id(p), p, "test") for p in ("a red circle", "a blue zebra")]
    items = plan_items(prompts, model_tag="tiny/sd15", seeds=[0, 1])
    return items, GenerateBatch(cfg)({k: np.asarray(v) for k, v in items.items()})


def test_plan_items_are_prompt_major_with_deterministic_ids():
    prompts = [("p1", "one", "s"), ("p2", "two", "s")]
    items = plan_items(prompts, model_tag="m", seeds=[5, 6], round_=2)
    assert items["seed"] == [5, 6, 5, 6]
    assert items["prompt_id"] == ["p1", "p1", "p2", "p2"]
    assert items["image_id"][1] == make_image_id("p1", "m", 6)
    assert len(set(items["image_id"])) == 4
    assert items["round"] == [2] * 4


def test_generate_batch_rows_carry_png_latent_and_parameters(cfg, generated):
    items, table = generated
    assert table.column("image_id").to_pylist() == items["image_id"]
    row = table.slice(0, 1).to_pylist()[0]
    assert Image.open(io.BytesIO(row["image"])).size == (32, 32)
    channels, h, w = row["latent_shape"]
    assert channels == 4 and h == w and 32 % h == 0
    assert len(row["latent"]) == channels * h * w
    assert (row["height"], row["num_inference_steps"]) == (32, 4)
    assert row["guidance_scale"] == pytest.approx(cfg.generation.guidance_scale)


def test_any_image_regenerates_alone(cfg, generated):
    """Each image has its own seeded generator: generating item 3 by itself reproduces it."""
    items, table = generated
    alone = GenerateBatch(cfg)({k: np.asarray(v[3:4]) for k, v in items.items()})
    np.testing.assert_allclose(
        np.asarray(alone.column("latent")[0].as_py()),
        np.asarray(table.column("latent")[3].as_py()),
        atol=1e-4,
    )
    first, second = (np.asarray(table.column("latent")[i].as_py()) for i in (0, 1))
    assert not np.allclose(first, second)  # different seeds, different images


@pytest.mark.parametrize("family", ["sd21", "sdxl"])
def test_generate_batch_runs_the_other_families(cfg, family):
    """SD2.1 (v-prediction) and SDXL (two text encoders) through the same callable, by model_ref."""
    items = plan_items([("p", "a red circle", "t")], model_tag=f"tiny/{family}", seeds=[3])
    table = GenerateBatch(cfg, model_ref=f"tiny/{family}")({k: np.asarray(v) for k, v in items.items()})
    row = table.to_pylist()[0]
    assert Image.open(io.BytesIO(row["image"])).size == (32, 32)
    assert row["model"] == f"tiny/{family}" and row["latent_shape"][0] == 4
    assert np.isfinite(np.asarray(row["latent"])).all()


def test_chained_scores_match_each_scorer_alone(cfg, generated):
    _, table = generated
    specs = cfg.scoring.scorers
    chained = ScoreBatch(specs, scorer_factory=make_scorer)(table)
    for spec in specs:
        alone = ScoreBatch([spec], scorer_factory=make_scorer)(table)
        assert chained.column(f"score_{spec.name}").equals(alone.column(f"score_{spec.name}"))
    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in table.column("image").to_pylist()]
    expected = [np.asarray(im, dtype=np.float32).mean() / 255 for im in images]
    np.testing.assert_allclose(chained.column("score_brightness").to_numpy(), expected, rtol=1e-6)
    assert chained.column(ERROR_COLUMN).null_count == table.num_rows


def test_failing_scorer_fails_loudly_naming_prompt_ids(cfg, generated):
    _, table = generated
    picky = cfg.scoring.scorers[0].model_copy(update={"name": "picky"})
    with pytest.raises(ScoringError, match=make_prompt_id("a blue zebra")) as info:
        ScoreBatch([picky], scorer_factory=make_scorer)(table)
    assert "picky" in str(info.value)


def test_quarantine_sets_aside_only_the_failing_rows(cfg, generated):
    _, table = generated
    picky = cfg.scoring.scorers[0].model_copy(update={"name": "picky"})
    out = ScoreBatch([picky], on_error="quarantine", scorer_factory=make_scorer)(table)
    errors = out.column(ERROR_COLUMN).to_pylist()
    assert [e is None for e in errors] == [True, True, False, False]  # rows 2, 3 are the zebra's
    assert "cannot score prompts mentioning 'zebra'" in errors[2]
    scores = out.column("score_picky").to_numpy()
    assert np.isfinite(scores[:2]).all() and np.isnan(scores[2:]).all()


def test_non_finite_scores_are_errors(cfg, generated):
    _, table = generated

    class NaNScorer:
        def __call__(self, images, prompts):
            return np.full(len(images), np.nan, dtype=np.float32)

    spec = cfg.scoring.scorers[0]
    with pytest.raises(ScoringError, match="non-finite"):
        ScoreBatch([spec], scorer_factory=lambda s: NaNScorer())(table)


def test_store_writes_each_image_once_and_quarantines_errors(tmp_path, cfg, generated):
    _, table = generated
    specs = [cfg.scoring.scorers[0].model_copy(update={"name": "picky"})]
    scored = ScoreBatch(specs, on_error="quarantine", scorer_factory=make_scorer)(table)
    store = CandidateStore(tmp_path / "run", ["picky"])
    assert store.write(scored) == 4
    assert store.write(scored) == 0  # a re-executed task delivers the same rows again
    assert (store.n_written, store.n_errors, store.n_duplicates_dropped) == (2, 2, 4)
    rows = read_rows(store.candidates_dir)
    assert rows.schema == candidates_schema(["picky"])
    assert set(rows.column("prompt").to_pylist()) == {"a red circle"}
    errors = read_rows(store.errors_dir)
    assert errors.num_rows == 2 and all("zebra" in e for e in errors.column("error").to_pylist())
    # A reopened store (a resumed run) knows both tables' ids and refuses a different metric set.
    assert len(CandidateStore(tmp_path / "run", ["picky"]).done) == 4
    with pytest.raises(Stage1Error, match=r"written with metrics \['picky'\]"):
        CandidateStore(tmp_path / "run", ["brightness"])


def test_store_removes_stale_temporary_files(tmp_path):
    (tmp_path / "run" / "candidates").mkdir(parents=True)
    stale = tmp_path / "run" / "candidates" / ".part-0123.parquet.abc.tmp"
    stale.write_bytes(b"half a file")
    CandidateStore(tmp_path / "run", [])
    assert not stale.exists()


def test_tables_read_in_polars_pandas_and_datasets(tmp_path, cfg, generated):
    _, table = generated
    store = CandidateStore(tmp_path / "run", ["brightness", "redness"])
    store.write(ScoreBatch(cfg.scoring.scorers, scorer_factory=make_scorer)(table))
    store.write_manifest({"mode": "test"})
    pattern = str(store.candidates_dir / "*.parquet")
    by_polars = pl.read_parquet(pattern)
    by_pandas = pd.read_parquet(sorted(glob.glob(pattern)))
    by_hf = datasets.load_dataset("parquet", data_files=pattern, split="train")
    for n in (by_polars.height, len(by_pandas), by_hf.num_rows):
        assert n == 4
    assert by_polars.schema["score_brightness"] == pl.Float32
    assert by_polars.schema["latent"] == pl.List(pl.Float32)
    assert by_pandas["image"].map(type).eq(bytes).all()
    assert by_hf.features["score_redness"].dtype == "float32"
    assert pa.Table.from_pandas(by_pandas, preserve_index=False).num_rows == 4


def test_docker_image_and_runtime_env_match_the_project():
    """Docker cannot run here; check what can be checked: copied paths exist, the base image's torch meets
    pyproject's range, and the runtime_env is one Ray accepts."""
    import re
    from pathlib import Path

    import yaml
    from packaging.requirements import Requirement
    from ray.runtime_env import RuntimeEnv

    dockerfile = Path("docker/Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert Path(src).exists(), f"docker/Dockerfile copies {src}, which is not in the repository"
    base_torch = re.search(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda", dockerfile).group(1)
    torch_req = Requirement(re.search(r'"(torch[<>=!~][^"]*)"', Path("pyproject.toml").read_text()).group(1))
    assert torch_req.specifier.contains(base_torch), f"base image torch {base_torch} vs pyproject {torch_req}"
    env = RuntimeEnv(**yaml.safe_load(Path("docker/runtime_env.yaml").read_text()))
    assert env["working_dir"] == "."
    assert yaml.safe_load(Path("docker/cluster.yaml").read_text())["docker"]["image"] == "balanced-dpo:latest"
