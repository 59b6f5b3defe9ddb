"""Small real scorers for the stage-1 tests, and a factory that builds them by name.

They are genuine `Scorer` subclasses computing colour statistics, so the stage-1 plumbing is tested with real
numbers without waiting for the neural scorers. `picky` raises on prompts containing its `fail_on` word, the way a
real scorer raises on an input it cannot handle. Ray workers receive them pickled by value (see `pickle_by_value`).
"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import ScorerSpec
from pipeline.paths import table_files
from scorers.base import Scorer, ScorerError


class Brightness(Scorer):
    name = "brightness"

    def _score_batch(self, images, prompts):
        return np.array([np.asarray(im, dtype=np.float32).mean() / 255.0 for im in images], dtype=np.float32)


class Redness(Scorer):
    name = "redness"

    def _score_batch(self, images, prompts):
        arrays = [np.asarray(im, dtype=np.float32) / 255.0 for im in images]
        return np.array([a[..., 0].mean() - a[..., 2].mean() for a in arrays], dtype=np.float32)


class Picky(Brightness):
    name = "picky"

    def _score_batch(self, images, prompts):
        word = self.spec.options.get("fail_on", "zebra")
        bad = [p for p in prompts if word in p]
        if bad:
            raise ScorerError(f"cannot score prompts mentioning {word!r}: {bad}")
        return super()._score_batch(images, prompts)


TEST_SCORERS = {cls.name: cls for cls in (Brightness, Redness, Picky)}


def make_scorer(spec: ScorerSpec) -> Scorer:
    return TEST_SCORERS[spec.name](spec)


def pickle_by_value() -> None:
    """Ray workers cannot import tests/; ship this module's classes inside the pickles instead."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def read_rows(directory) -> pa.Table:
    """All rows of a table directory, sorted by image_id, for exact comparisons."""
    files = table_files(directory)
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return table.sort_by("image_id")
