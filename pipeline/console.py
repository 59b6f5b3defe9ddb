"""What a user sees while a command runs: one bar or line per stage on the console, everything else in a log file.

Every command line opens a `console_session(run_dir, command, verbose)`. It writes `<run>/logs/<command>-<time>.log`
and, unless `verbose`, points the process's own stdout and stderr (file descriptors 1 and 2) at that file: the
libraries' output — Ray's core and its workers, Ray Data's progress dumps, diffusers' and transformers' loading
bars and warnings — lands in the log, whatever language wrote it. The console keeps a duplicate of the original
stdout for our own lines:

- `say(line)`: one line (a stage's summary: what it wrote, and where);
- `Progress(stage, total, unit)`: a bar when the console is a terminal, else a line every `LINE_EVERY_S` seconds
  ("stage 1: 96/192 images, 1.6 images/s, eta 60 s"), and nothing more.

Both also go to the log, so the log holds everything. Without a session (the Python API in a notebook or a test)
`say` prints to stdout and `Progress` draws a tqdm bar on stderr.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

LINE_EVERY_S = 15.0
OUR_LOGGERS = ("pipeline", "trainer", "scorers", "bdpo")
logger = logging.getLogger("bdpo.console")


@dataclass
class _Session:
    console: TextIO  # the original stdout (a duplicate of fd 1 taken before the redirect)
    log_path: Path
    interactive: bool


_session: _Session | None = None


def log_path() -> Path | None:
    """The current session's log file, if a command line opened one."""
    return _session.log_path if _session else None


def say(line: str) -> None:
    """One line for the user: on the console, and in the log."""
    if _session is None:
        print(line, flush=True)
        return
    _session.console.write(line + "\n")
    _session.console.flush()
    logger.info(line)


def _rate(done: int, seconds: float) -> float:
    return done / seconds if seconds > 0 else 0.0


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class Progress:
    """Progress of one stage: a bar on a terminal, a line every few seconds elsewhere; `close()` ends it.

    `set_note` adds text after the counts (e.g. the loss); `enabled=False` shows nothing (`progress=False`).
    """

    def __init__(self, stage: str, total: int, unit: str, *, initial: int = 0, enabled: bool = True) -> None:
        self.stage, self.total, self.unit = stage, total, unit
        self.done = initial
        self.note = ""
        self.enabled = enabled
        self.started = time.monotonic()
        self.first = initial
        self.last_line = self.started
        self._bar: Any = None
        if not enabled:
            return
        if _session is None or _session.interactive:
            from tqdm.auto import tqdm

            stream = _session.console if _session else sys.stderr
            self._bar = tqdm(
                total=total, initial=initial, desc=stage, unit=f" {unit}", file=stream, leave=False
            )

    def set_note(self, note: str) -> None:
        """What follows the counts until the next note (e.g. the latest loss)."""
        self.note = note
        if self._bar is not None:
            self._bar.set_postfix_str(note, refresh=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self.last_line >= LINE_EVERY_S:
            self.last_line = now
            say(self.line())

    def line(self) -> str:
        """`stage 1: 96/192 images, 1.6 images/s, eta 60 s, <note>`."""
        elapsed = time.monotonic() - self.started
        rate = _rate(self.done - self.first, elapsed)
        parts = [f"{self.stage}: {self.done}/{self.total} {self.unit}", f"{rate:.2g} {self.unit}/s"]
        if rate > 0 and self.done < self.total:
            parts.append(f"eta {_duration((self.total - self.done) / rate)}")
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _configure_logging(log_file: Path, verbose: bool) -> logging.Handler:
    """Everything to the log file: our loggers at INFO, the libraries' at WARNING, and `warnings` as records."""
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    logging.captureWarnings(True)
    if verbose:  # the libraries' own output comes back to the console, ours too
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(console)
    return handler


def quiet_libraries(only_loaded: bool = False) -> None:
    """Loading bars of diffusers and transformers say nothing a user needs (verbose mode keeps them in the log).

    `only_loaded`: silence only a library this process has already imported. Importing diffusers just to silence
    it costs about 3 s of CPU, paid by every process that never loads a diffusers model (the stage-1 command line,
    each scoring actor).
    """
    for library in ("diffusers", "transformers"):
        if only_loaded and library not in sys.modules:
            continue
        with suppress(ImportError):
            importlib.import_module(f"{library}.utils.logging").disable_progress_bar()


def _console_stream() -> tuple[TextIO, bool]:
    """Where our lines go: a duplicate of fd 1 when `sys.stdout` writes there (a terminal, a pipe, a file), else
    `sys.stdout` itself (a notebook's or a test's capturing stream); and whether we own (and close) it."""
    try:
        writes_to_fd1 = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):
        writes_to_fd1 = False
    if writes_to_fd1:
        return os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace"), True
    return sys.stdout, False


@contextmanager
def console_session(run_dir: str | Path, command: str, verbose: bool = False) -> Iterator[Path]:
    """Open `<run>/logs/<command>-<time>.log`; route the process's output there (unless `verbose`); yield its path.

    The console gets our lines only. An exception leaving the session is written to the log with its traceback
    and raised on: the command line says it in one line (input it refuses) or Python prints it (a bug).
    """
    global _session
    logs = Path(run_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    console, owned = _console_stream()
    interactive = console.isatty()
    log_stream = open(log_file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed below
    handler = _configure_logging(log_file, verbose)
    if not verbose:
        quiet_libraries(only_loaded=True)  # a later import's bars go to the log, as everything else does
        os.dup2(log_stream.fileno(), 1)
        os.dup2(log_stream.fileno(), 2)
    _session = _Session(console=console, log_path=log_file, interactive=interactive)
    say(f"[{command}] log: {log_file}")
    try:
        yield log_file
    except BaseException as exc:
        if not isinstance(exc, SystemExit | KeyboardInterrupt):
            logger.exception("%s failed", command)  # the command line reports it on the console
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        logging.getLogger().removeHandler(handler)
        handler.close()
        log_stream.close()
        if owned:
            console.close()
        logging.captureWarnings(False)
        _session = None
