"""The whole job refuses bad input before its first stage starts (#16)."""

from __future__ import annotations

import sys

import pytest

from pipeline.config import load_config
from pipeline.data.prompts import PromptSourceError
from pipeline.workflows.job import run_job


def test_a_bad_evaluation_prompt_file_is_found_before_stage_1(tmp_path):
    """The evaluation's prompts are read at the end of the job: a blank file used to surface after training."""
    blank = tmp_path / "eval_prompts.txt"
    blank.write_text("\n  \n")
    cfg = load_config(
        "configs/tiny.yaml", [f"run.output_dir={tmp_path / 'run'}", f"eval.prompts.path={blank}"]
    )
    with pytest.raises(PromptSourceError, match="no prompts in .*eval_prompts.txt"):
        run_job(cfg, progress=False)
    assert not (tmp_path / "run").exists()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()
