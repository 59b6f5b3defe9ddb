"""What the stage-1 processes import: each import of torch or diffusers costs a process seconds of CPU.

The command line only checks a config and drives Ray, so it imports neither; a scoring actor needs torch and its
scorers' libraries, not diffusers. Each check runs in a fresh interpreter, as those processes start.
"""

from __future__ import annotations

import subprocess
import sys

from helpers.configs import ROOT


def _modules_after(code: str) -> set[str]:
    """The top-level heavy modules a fresh interpreter holds after running `code`."""
    probe = (
        f"{code}\nimport sys\n"
        "print(' '.join(m for m in ('torch', 'diffusers', 'transformers', 'open_clip') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(done.stdout.split())


def test_the_command_line_checks_a_config_without_torch_or_diffusers():
    loaded = _modules_after(
        "from pipeline.config import load_config\n"
        "from pipeline.console import quiet_libraries\n"
        "from pipeline.score import main\n"
        "from pipeline.stage1.plan import check_references\n"
        "cfg = load_config('configs/tiny.yaml')\n"
        "quiet_libraries(only_loaded=True)\n"
        "check_references(cfg, {'base': None, 'other': 'tiny/sdxl'}, default_scorers=True)"
    )
    assert loaded == set()


def test_a_scoring_actor_loads_its_scorers_without_diffusers():
    loaded = _modules_after(
        "from pipeline.config import load_config\n"
        "from pipeline.stage1.batches import ScoreBatch\n"
        "ScoreBatch(load_config('configs/tiny.yaml').scoring.scorers)"
    )
    assert "diffusers" not in loaded
    assert {"torch", "transformers", "open_clip"} <= loaded  # the probe sees what the scorers do load
