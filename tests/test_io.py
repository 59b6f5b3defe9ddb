"""Atomic writes: published files respect the umask, and staging left by killed writers is removed (#16)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pyarrow as pa
import pytest
from helpers.configs import ROOT

from pipeline.io import atomic_directory, write_parquet_atomic, write_text_atomic


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_published_files_and_directories_respect_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        text = write_text_atomic(tmp_path / "manifest.json", "{}")
        table = write_parquet_atomic(pa.table({"x": [1]}), tmp_path / "part-00000.parquet")
        with atomic_directory(tmp_path / "pairs") as staging:
            (staging / "part-00000.parquet").write_bytes(b"x")
    finally:
        os.umask(old)
    assert mode(text) == file_mode and mode(table) == file_mode
    assert mode(tmp_path / "pairs") == dir_mode


def _age(path, seconds: float = 3600) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_staging_of_a_killed_writer_is_removed_and_a_live_one_kept(tmp_path):
    from pipeline.io import remove_stale_staging

    target = tmp_path / "majority"
    writer = (
        "import sys, time\n"
        "from pipeline.io import atomic_directory\n"
        "with atomic_directory(sys.argv[1]) as s:\n"
        "    (s / 'part-00000.parquet').write_bytes(b'0' * 100_000)\n"
        "    print(s, flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        staging = tmp_path / os.path.basename(proc.stdout.readline().strip())
        assert staging.is_dir()
        _age(staging)
        assert remove_stale_staging(target) == []  # alive: its lock is held
        assert staging.is_dir()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdout.close()
    assert staging.is_dir()  # the kill left it behind
    assert remove_stale_staging(target) == [staging]
    assert not staging.exists()


def test_only_old_unlocked_staging_of_the_same_target_goes(tmp_path):
    """What the next write of a target removes: its own old, unlocked staging; not another target's, not a
    live writer's, not one created a moment ago."""
    from pipeline.io import claimed

    stale, young, live = (tmp_path / f".majority.{n}" for n in ("abcdefgh", "ijklmnop", "qrstuvwx"))
    other, retired = tmp_path / ".majority_x.abcdefgh", tmp_path / ".majority.old.abcdefgh"
    for d in (stale, young, live, other, retired):
        d.mkdir()
        (d / "part-00000.parquet").write_bytes(b"x")
    for d in (stale, live, other, retired):
        _age(d)
    with claimed(live), atomic_directory(tmp_path / "majority") as staging:
        (staging / "part-00000.parquet").write_bytes(b"new")
    assert not stale.exists() and not retired.exists()
    assert young.is_dir() and live.is_dir() and other.is_dir()
    assert (tmp_path / "majority" / "part-00000.parquet").read_bytes() == b"new"
