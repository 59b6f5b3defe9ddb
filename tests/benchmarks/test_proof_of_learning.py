"""Proof that it learns (slow, ~10 min on an idle 2-core machine): DPO beats its base on held-out prompts and seeds.

The criterion is fixed in `benchmarks/proof_of_learning.py` (two training seeds, majority win rate's 95% CI above
0.5 for both, a shuffled-label placebo below both); this test runs it as is.
"""

from __future__ import annotations

import sys

import pytest
from helpers.configs import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_dpo_beats_its_base_on_held_out_items_and_beats_its_placebo(tmp_path):
    from proof_of_learning import VARIANTS, proof_config, run_ablation, verdict

    out = run_ablation(proof_config(tmp_path), VARIANTS, progress=False)
    result = verdict(out, VARIANTS)
    assert result["n_items"] == 128
    assert result["every_seed_ci_above_half"], result
    assert result["placebo_below_every_seed"], result
