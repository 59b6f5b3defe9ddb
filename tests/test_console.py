"""What a user sees: our lines on the console, everything else (Ray, diffusers, C++ output) in the run's log file."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.configs import ROOT

from pipeline import console

SESSION_SCRIPT = textwrap.dedent(
    """
    import logging, os, sys, warnings
    from pipeline.console import Progress, console_session, say

    verbose = sys.argv[2] == "verbose"
    with console_session(sys.argv[1], "probe", verbose=verbose):
        say("ours: stage done")
        print("a library's print")
        os.write(1, b"C++ on fd 1\\n")
        os.write(2, b"C++ on fd 2\\n")
        logging.getLogger("ray").warning("a library warning")
        warnings.warn("a python warning")
        bar = Progress("stage x", 3, "images")
        bar.update(3)
        bar.close()
        say(bar.line())
    print("after the session")
    """
)


def _run_session(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess, str]:
    done = subprocess.run(
        [sys.executable, "-c", SESSION_SCRIPT, str(tmp_path), mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (log,) = (tmp_path / "logs").glob("probe-*.log")
    return done, log.read_text()


def test_the_console_keeps_our_lines_and_the_log_keeps_everything(tmp_path):
    done, log = _run_session(tmp_path, "quiet")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("[probe] log: ") and lines[0].endswith(".log")
    assert lines[1] == "ours: stage done"
    assert re.fullmatch(r"stage x: 3/3 images, [0-9.e+]+ images/s", lines[2]), lines[2]
    assert lines[3:] == ["after the session"], "the console is ours again after the session"
    assert done.stderr == ""
    for noise in ("a library's print", "C++ on fd 1", "C++ on fd 2", "a library warning", "a python warning"):
        assert noise in log, noise
    assert "ours: stage done" in log and "stage x: 3/3 images" in log


def test_verbose_shows_the_libraries_too_and_still_logs(tmp_path):
    done, log = _run_session(tmp_path, "verbose")
    shown = done.stdout + done.stderr
    for line in ("ours: stage done", "a library's print", "C++ on fd 1", "C++ on fd 2", "a library warning"):
        assert line in shown, line
    assert "ours: stage done" in log and "a library warning" in log


def test_a_progress_line_says_counts_rate_and_eta():
    bar = console.Progress("stage 1", 192, "images", enabled=False)
    bar.update(96)
    bar.started -= 60.0  # as if 96 images had taken a minute
    bar.set_note("loss 0.61")
    assert bar.line() == "stage 1: 96/192 images, 1.6 images/s, eta 60 s, loss 0.61"


def test_outside_a_session_say_prints_to_stdout(capsys):
    console.say("hello")
    assert capsys.readouterr().out == "hello\n"


@pytest.mark.ray
@pytest.mark.train
def test_the_demo_prints_a_screenful_of_our_own_lines_and_logs_the_rest(small_demo):
    """`make demo`'s console on a small run: few lines, none a library's warning or error, the log holds all."""
    assert small_demo.returncode == 0, small_demo.stdout[-3000:] + small_demo.stderr[-3000:]
    lines = small_demo.stdout.splitlines()
    assert len(lines) <= 60, "\n".join(lines)
    assert small_demo.stderr.strip() == "", small_demo.stderr[-3000:]
    foreign = [
        line for line in lines if re.search(r"WARNING|ERROR|Traceback|core_worker|Loading|it/s\]", line)
    ]
    assert foreign == [], foreign
    for stage in ("stage 1:", "vote (majority):", "train (majority):", "eval:"):
        assert any(line.startswith(stage) for line in lines), stage
    log_path = Path(lines[0].split("log: ", 1)[1])
    log = log_path.read_text()
    assert log_path.parent == small_demo.run_dir / "logs"
    assert "Started a local Ray instance" in log  # a library's own line, kept in the log
    assert all(line in log for line in lines if line.strip())
