"""Writing tables and manifests safely: a reader never sees half a file, and a failed write loses nothing.

Every table directory gets a `manifest.json` beside it with the resolved config, package versions, row counts
and timings, so a cached table says how it was made.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import queue
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TRACKED_PACKAGES = (
    "balanced-dpo",
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "peft",
    "ray",
    "polars",
    "pyarrow",
    "open_clip_torch",
)


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def publishable(path: Path, directory: bool = False) -> None:
    """Give a staged file or directory the mode a plain `open`/`mkdir` would have (0666/0777 minus the umask).

    `mkstemp` and `mkdtemp` create 0600 / 0700 whatever the umask: published as they are, a colleague on a shared
    cluster could not read the tables.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block finishes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            publishable(tmp_path)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def staging_pattern(target: Path) -> re.Pattern[str]:
    """Names `atomic_directory` stages `target` under: `.<name>.XXXXXXXX` and `.<name>.old.XXXXXXXX`."""
    return re.compile(rf"\.{re.escape(target.name)}\.(old\.)?[a-z0-9_]{{8}}")


@contextmanager
def claimed(directory: Path) -> Iterator[None]:
    """Hold an advisory lock (`flock`) on a directory while this process works in it.

    The kernel drops the lock when the process dies, so an unlocked staging directory is an abandoned one. Where
    the filesystem has no `flock` (some network mounts) nothing is held and nothing is ever judged abandoned.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def _abandoned(directory: Path, min_age_s: float) -> bool:
    """No live writer holds it (its lock can be taken) and it is old enough that no writer is just creating it."""
    try:
        if time.time() - directory.stat().st_mtime < min_age_s:
            return False
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_stale_staging(target: str | Path, min_age_s: float = 60.0) -> list[Path]:
    """Delete the staging directories that killed writers of `target` left beside it; returns what was removed.

    A directory is removed only when no process holds its lock (see `claimed`) and it is at least `min_age_s`
    old (a writer locks its directory right after creating it; the age covers that instant).
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = staging_pattern(target)
    stale = [
        p
        for p in target.parent.iterdir()
        if pattern.fullmatch(p.name) and p.is_dir() and _abandoned(p, min_age_s)
    ]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory beside `target`; it replaces `target` whole only if the block finishes.

    Staging directories that killed writers of the same target left behind are removed first (`remove_stale_staging`),
    so repeated kills never pile up data; a live writer's directory is locked and left alone.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with claimed(staging):
            yield staging
            publishable(staging, directory=True)
            # Two renames, then the slow delete: the target is missing only between the renames, never half-deleted.
            retired_parent = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            with claimed(retired_parent):
                if target.exists():
                    os.replace(target, retired_parent / "old")
                os.replace(staging, target)
                shutil.rmtree(retired_parent, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def build_once(target: str | Path, build: Callable[[Path], object], done_file: str) -> Path:
    """Run `build(staging_dir)` once for `target`, safe under concurrent processes (a file lock), then rename.

    `done_file` is a file every finished build contains: its presence means `target` is complete, so readers
    (other processes, Ray actors) never load half a model.
    """
    from filelock import FileLock

    target = Path(target)
    if (target / done_file).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / done_file).is_file():
            return target
        with atomic_directory(target) as staging:
            build(staging)
    return target


def write_text_atomic(target: str | Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_parquet_atomic(table: pa.Table, target: str | Path, **kwargs: Any) -> Path:
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, **kwargs)
    return Path(target)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_manifest(directory: str | Path, **fields: Any) -> Path:
    """Write `<directory>/manifest.json` with the given fields plus versions and a timestamp."""
    directory = Path(directory)
    body = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "packages": package_versions(),
        **fields,
    }
    return write_text_atomic(directory / "manifest.json", json.dumps(body, indent=2, default=str) + "\n")


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}")
    return json.loads(path.read_text())


class ParallelParquetWriter:
    """Row groups handed round-robin to one writer thread per file.

    Encoding parquet is single-threaded per file and was the vote's largest cost (≈ 10 s of 24 s at 45M pairs on
    two cores); pyarrow releases the GIL while it encodes, so several files are written while the caller computes
    the next table. File 0 is always written, so even no rows leave a readable table. A writer's error is raised
    by the next `write` or by `close`; the caller writes into a staging directory, so a failure publishes nothing.
    """

    def __init__(self, directory: Path, name: str, schema: pa.Schema, files: int, **options: Any) -> None:
        """`name` is a format string for the file index, e.g. `part-{:05d}.parquet`."""
        self.schema, self.options = schema, options
        self.paths = [directory / name.format(i) for i in range(files)]
        self.queues: list[queue.Queue] = [queue.Queue(maxsize=1) for _ in range(files)]
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(files)]
        self.next = 0
        self.used = 1
        for t in self.threads:
            t.start()

    def _run(self, i: int) -> None:
        writer = None
        try:
            while (table := self.queues[i].get()) is not None:
                if writer is None:
                    writer = pq.ParquetWriter(self.paths[i], self.schema, **self.options)
                writer.write_table(table)
            if writer is None and i == 0:
                writer = pq.ParquetWriter(self.paths[i], self.schema, **self.options)
        except BaseException as exc:  # reported by close(); keep draining so the producer never blocks
            self.errors.append(exc)
            while self.queues[i].get() is not None:
                pass
        finally:
            if writer is not None:
                writer.close()

    def write(self, table: pa.Table) -> None:
        if self.errors:
            raise self.errors[0]
        self.queues[self.next].put(table)
        self.used = max(self.used, self.next + 1)
        self.next = (self.next + 1) % len(self.queues)

    def close(self) -> list[str]:
        """Wait for every file; returns the names of the files written."""
        for q in self.queues:
            q.put(None)
        for t in self.threads:
            t.join()
        if self.errors:
            raise self.errors[0]
        return [p.name for p in self.paths[: self.used]]
