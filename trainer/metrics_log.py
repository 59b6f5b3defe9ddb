"""The training curves as a small JSON-lines file beside the tensorboard logs: `logs/metrics.jsonl`.

One line per log step (`{"step": 10, "loss": 0.69, "implicit_acc": 0.5, ..., "lr": 1e-4}`), written by the main
process whatever `train.tracker` is (tensorboard, none, a later wandb), so the report can draw the curves of every
run without importing tensorboard. A resumed run appends the steps it repeats; readers keep the last line of a
step. Runs trained before this file existed are read from their tensorboard event files instead
(`pipeline.reporting.training`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


def append_metrics(path: Path, step: int, metrics: dict[str, float]) -> None:
    """Append one log step; non-finite values are written as null (JSON has no NaN)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"step": int(step), **{k: (float(v) if math.isfinite(v) else None) for k, v in metrics.items()}}
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Per metric, its (step, value) points in step order; the last line of a repeated step wins.

    A torn last line (the process was killed while writing it) is skipped; any other unreadable line is an error
    naming the file and the line number.
    """
    by_step: dict[int, dict[str, float | None]] = {}
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            step = int(row.pop("step"))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a metrics line ({exc})") from None
        by_step[step] = row
    curves: dict[str, list[tuple[int, float]]] = {}
    for step in sorted(by_step):
        for name, value in by_step[step].items():
            if value is not None:
                curves.setdefault(name, []).append((step, float(value)))
    return curves
