"""The one way tests build a run configuration, and the project root every path in a config is relative to.

`run_config(run_dir, *overrides, base=..., **sections)` validates exactly as the entry points do: a base YAML (or
the defaults), whole sections given as dicts, then `key.path=value` overrides, with `run.output_dir` = `run_dir`.
The presets below are the shapes the suites use again and again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import RunConfig, apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[2]
TINY_YAML = ROOT / "configs" / "tiny.yaml"

# Small runs score inside the generation actor (`scoring.layout=fused`): one process start-up per generating call
# instead of two, where the suite's time goes (docs/development.md). `chained` runs in the shipped configs'
# rehearsals and `separate` in tests/stage1/test_stage1_ray.py.
FUSED = "scoring.layout=fused"

# `configs/tiny.yaml` cut to the smallest whole job: random tiny models, 3 prompts × 3 candidates of 3 steps, a
# 2-step training of 4 pairs, 2 × 2 evaluation items. The job tests and the small demo add what they check.
SMALL_JOB = [
    "model.pretrained=tiny/sd15",
    FUSED,
    "prompts.limit=3",
    "generation.num_candidates=3",
    "generation.num_inference_steps=3",
    "eval.prompts.limit=2",
    "eval.seeds_per_prompt=2",
    "eval.bootstrap_samples=200",
    "train.max_steps=2",
    "train.batch_size=4",
    "train.tracker=none",
]


def run_config(
    run_dir: str | Path, *overrides: str, base: str | Path | None = None, **sections: dict[str, Any]
) -> RunConfig:
    """`base` (a YAML file, or None for the defaults) + `sections` (replacing those sections) + `overrides`."""
    data: dict[str, Any] = {}
    if base is not None:
        data = load_config(base).model_dump(mode="json")
    data.update(sections)
    data = apply_overrides(data, [f"run.output_dir={run_dir}", *overrides])
    return RunConfig.model_validate(data)


def tiny_config(tmp_path: Path, *overrides: str, scorers=("brightness", "redness")) -> RunConfig:
    """configs/tiny.yaml made small for stage 1: 3 prompts × 2 seeds, 4 steps, 32×32 images, colour scorers."""
    specs = "[" + ", ".join(f"{{name: {s}, batch_size: 4}}" for s in scorers) + "]"
    small = [
        "prompts.limit=3",
        "generation.num_candidates=2",
        "generation.num_inference_steps=4",
        "generation.height=32",
        "generation.width=32",
        "generation.batch_size=2",
        f"scoring.scorers={specs}",
        FUSED,
    ]
    return run_config(tmp_path / "run", *small, *overrides, base=TINY_YAML)


TRAIN_DEFAULTS: dict[str, Any] = {
    "use_lora": False,
    "beta": 500.0,
    "learning_rate": 1e-4,
    "max_steps": 4,
    "batch_size": 4,
    "checkpoint_every": 2,
    "log_every": 2,
    "eval_pairs": 24,
    "tracker": "none",
}


def train_config(run: Path, family: str = "sd15", **train_keys: Any) -> RunConfig:
    """A trainer run on a toy run directory (`pipeline.testing.toy_run`) with the tiny model of `family`."""
    return run_config(run, model={"pretrained": f"tiny/{family}"}, train={**TRAIN_DEFAULTS, **train_keys})
