"""The project's own Pick-a-Pic-layout table: deterministic, importable, labelled by its hidden rule, and
reachable from a config as `tiny/pickapic/<split>.parquet`."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import PromptsSection, load_config
from pipeline.data.embedded import resolve_data_path
from pipeline.data.pickapic import import_pickapic
from pipeline.data.prompts import load_prompts
from pipeline.testing.pickapic_synthetic import (
    SyntheticPickapicSettings,
    caption_text,
    captions,
    human_label,
    render,
    write_synthetic_pickapic,
)

SMALL = SyntheticPickapicSettings(train_captions=6, test_captions=3, images_per_caption=3, size=32)


def test_the_table_is_deterministic_and_in_the_pickapic_layout(tmp_path):
    a = write_synthetic_pickapic(tmp_path / "a", SMALL)
    b = write_synthetic_pickapic(tmp_path / "b", SMALL)
    for split in ("train", "test"):
        assert (a / f"{split}.parquet").read_bytes() == (b / f"{split}.parquet").read_bytes()
    train = pq.read_table(a / "train.parquet")
    assert {"caption", "jpg_0", "jpg_1", "label_0", "label_1"} <= set(train.column_names)
    assert train.num_rows == 6 * 3  # every pair of a caption's three images
    candidates, human = import_pickapic(a / "train.parquet")
    assert candidates.num_rows == 6 * 3 and human.num_rows == 18  # each image once, each row a labelled pair
    assert set(candidates.column("height").to_pylist()) == {32}
    test = pq.read_table(a / "test.parquet")
    assert not set(train.column("caption").to_pylist()) & set(test.column("caption").to_pylist())


def test_the_human_labels_follow_the_hidden_rule_with_noise():
    rng = np.random.default_rng(0)
    agree, n = 0, 0
    for shape, background in captions(20, rng):
        images = [render(shape, background, 16, rng, off_caption=0.35) for _ in range(20)]
        for i in range(0, 20, 2):
            a, b = images[i].appeal(3.0), images[i + 1].appeal(3.0)
            label = human_label(a, b, noise=0.15, rng=rng)
            agree += (label == 1.0) == (a > b)
            n += 1
    # Mostly the rule, not always: the users are noisy (0.81–0.91 for rng seeds 0–5).
    assert n == 200 and 0.75 < agree / n < 0.95
    assert caption_text("red", "blue") == "a red shape on a blue background"


def test_a_config_names_the_embedded_table_like_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("BDPO_CACHE", str(tmp_path))
    cfg = load_config("configs/tiny_experiment.yaml")  # the file does not exist yet: built on first use
    assert cfg.prompts.pairs == "tiny/pickapic/train.parquet"
    path = resolve_data_path("tiny/pickapic/train.parquet")
    assert path.startswith(str(tmp_path)) and pq.read_table(path).num_rows == 48 * 6
    test = load_prompts(PromptsSection(manifest="data_manifests/tiny_pickapic_test.yaml"))
    assert len(test) == 16 and test.prompts[0].startswith("a ")
    with pytest.raises(FileNotFoundError, match="no such embedded file"):
        resolve_data_path("tiny/pickapic/validation.parquet")
