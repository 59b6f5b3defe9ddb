"""The two weight conventions besides real checkpoints: `pretrained: tiny` and `pretrained: random-full`.

- `tiny`: a small random-weight model of the scorer's own architecture family, built once with a fixed seed,
  written to the local cache (`pipeline.models.refs.cache_root()/scorers/…`) in the same file layout as the real
  checkpoint, and then loaded back through the same loader as real weights. The embedded default uses these.
- `random-full`: the full-size architecture with random weights, built in memory with no download, for GPU
  throughput and memory checks.

Builds go to a temporary directory that is renamed into place under a file lock, so Ray actors that start at the
same time build once and never read a half-written model.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

from pipeline.io import build_once
from pipeline.models.refs import cache_root

TINY = "tiny"
RANDOM_FULL = "random-full"
# Bump when a tiny builder changes, so stale caches are rebuilt rather than silently reused.
TINY_VERSION = 1
DONE_MARKER = ".complete"


def is_tiny(pretrained: str | None) -> bool:
    return pretrained == TINY


def is_random_full(pretrained: str | None) -> bool:
    return pretrained == RANDOM_FULL


def seed_for(tag: str) -> int:
    """A fixed seed per tiny model: different models differ, and every rebuild is identical."""
    return zlib.crc32(tag.encode()) % (2**31)


def tiny_dir(tag: str) -> Path:
    return cache_root() / "scorers" / f"{tag}-tiny-v{TINY_VERSION}"


def ensure_built(tag: str, build: Callable[[Path], None]) -> Path:
    """Run `build(directory)` once for `tag` (safe under concurrent processes) and return the directory."""

    def build_and_mark(staging: Path) -> None:
        build(staging)
        (staging / DONE_MARKER).write_text(tag + "\n")

    return build_once(tiny_dir(tag), build_and_mark, DONE_MARKER)
