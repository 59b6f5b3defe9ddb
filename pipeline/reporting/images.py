"""The images the page shows, as files beside it: fetched from a table in one scan, thumbnailed when large.

Images stay files next to `index.html` (`images/<image id>.<ext>`), so the page opens offline and the HTML stays
small. Small images (the tiny models' 64×64 PNGs) are copied byte for byte; larger ones (512² or 1024² from real
models) become JPEG thumbnails of `ReportLimits.thumb_px`, which bounds the page's size whatever the model.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
from PIL import Image, UnidentifiedImageError

from pipeline.paths import table_files

_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"GIF8", "gif"))


def fetch_images(table_dir: Path, image_ids: Iterable[str]) -> dict[str, bytes]:
    """The `image` bytes of the given ids from a candidates-layout table, in one filtered scan."""
    wanted = sorted(set(image_ids))
    files = table_files(table_dir)
    if not wanted or not files:
        return {}
    frame = (
        pl.scan_parquet(files)
        .select("image_id", "image")
        .filter(pl.col("image_id").is_in(wanted))
        .unique(subset="image_id", keep="first")
        .collect()
    )
    return dict(zip(frame["image_id"].to_list(), frame["image"].to_list(), strict=True))


def image_format(data: bytes) -> str | None:
    """`png`, `jpg`, `gif` or `webp` from the leading bytes; None for anything else."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


class ImageFolder:
    """Writes images into `<report>/images/` and returns their paths relative to the page."""

    def __init__(self, report_dir: Path, thumb_px: int) -> None:
        self.dir = report_dir / "images"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.thumb_px = thumb_px
        self.written: dict[str, str | None] = {}

    def add(self, image_id: str, data: bytes) -> str | None:
        """The page-relative path of the image, or None when the bytes are not an image Pillow can read."""
        if image_id not in self.written:
            self.written[image_id] = self._write(image_id, data)
        return self.written[image_id]

    def _write(self, image_id: str, data: bytes) -> str | None:
        name = _SAFE.sub("_", image_id)
        try:
            with Image.open(io.BytesIO(data)) as im:
                ext = image_format(data)
                if max(im.size) > self.thumb_px or ext is None:
                    im.load()
                    picture = im.convert("RGB")
                    picture.thumbnail((self.thumb_px, self.thumb_px))
                    ext = "jpg"
                    buffer = io.BytesIO()
                    picture.save(buffer, format="JPEG", quality=85)
                    data = buffer.getvalue()
        except (UnidentifiedImageError, OSError, ValueError):
            return None
        (self.dir / f"{name}.{ext}").write_bytes(data)
        return f"images/{name}.{ext}"

    def add_all(self, images: dict[str, bytes]) -> dict[str, str | None]:
        """Every image, decoded and thumbnailed on a few threads (Pillow releases the GIL while it codes)."""
        todo = {i: d for i, d in images.items() if i not in self.written}
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for image_id, path in zip(todo, pool.map(self._write, todo, todo.values()), strict=True):
                self.written[image_id] = path
        return {image_id: self.written[image_id] for image_id in images}

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.iterdir())
