"""Embedded data sets: `tiny/pickapic/<split>.parquet`, built once into the local cache like the tiny models.

The synthetic Pick-a-Pic-layout table (`pipeline.testing.pickapic_synthetic`) is what the tiny experiment relabels
and trains the human-label baseline on. A config names it like a file (`prompts.pairs: tiny/pickapic/train.parquet`,
or a manifest's source), and every reader resolves the name here: the table is written on first use into
`$BDPO_CACHE/data/` (under a file lock, renamed into place when complete) and read from there afterwards.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "tiny/pickapic/"
FILES = ("train.parquet", "test.parquet")
# Bump when the generator's output changes, so stale caches are rebuilt instead of silently reused.
VERSION = 2


def is_embedded(ref: str) -> bool:
    return ref.startswith(PREFIX)


def embedded_dir() -> Path:
    from pipeline.models.refs import cache_root

    return cache_root() / "data" / f"tiny-pickapic-v{VERSION}"


def resolve_data_path(ref: str) -> str:
    """A path as given, or the cached file an embedded name stands for (built on first use)."""
    if not is_embedded(ref):
        return ref
    name = ref[len(PREFIX) :]
    if name not in FILES:
        raise FileNotFoundError(f"{ref}: no such embedded file; there are {[PREFIX + f for f in FILES]}")
    from pipeline.io import build_once
    from pipeline.testing.pickapic_synthetic import write_synthetic_pickapic

    directory = build_once(embedded_dir(), write_synthetic_pickapic, "settings.json")
    return str(directory / name)
