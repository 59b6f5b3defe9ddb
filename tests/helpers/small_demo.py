"""One small real `make demo` (a subprocess of `python -m pipeline.demo`), shared by the tests that read its outputs.

Tiny models, 3 prompts × 3 candidates, 4 DPO steps, 2 × 2 evaluation items: stage 1 on a local Ray, the vote, the
trainer, the evaluation and the report all run, as a user's `make demo` does, in about a minute on an idle machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers.configs import ROOT, SMALL_JOB

SMALL_DEMO = [
    *SMALL_JOB,
    "train.max_steps=4",
    "train.log_every=1",
    "train.ref_update.every=2",
    "train.eval_pairs=4",
]


@dataclass
class DemoRun:
    run_dir: Path
    returncode: int
    stdout: str
    stderr: str

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "run_dir": str(self.run_dir)})

    @classmethod
    def from_json(cls, text: str) -> DemoRun:
        fields = json.loads(text)
        return cls(**{**fields, "run_dir": Path(fields["run_dir"])})


def run_small_demo(run_dir: Path, *extra: str) -> DemoRun:
    overrides = [arg for o in [f"run.output_dir={run_dir}", *SMALL_DEMO] for arg in ("--set", o)]
    cmd = [sys.executable, "-m", "pipeline.demo", "--config", "configs/tiny.yaml", *overrides, *extra]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    return DemoRun(run_dir, done.returncode, done.stdout, done.stderr)
