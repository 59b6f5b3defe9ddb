"""The paper-style table: assembled from evaluations of one protocol only, rows methods, balance in every view."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation import ProtocolMismatch, tables
from pipeline.evaluation import winrates as wr
from pipeline.evaluation.compare import rates_frame
from pipeline.evaluation.paper_table import combine_evaluations, headline, markdown, write_paper_table
from pipeline.evaluation.protocol import read_parquet_protocol

PROTOCOL = {
    "sampler": "default",
    "num_inference_steps": 10,
    "guidance_scale": 5.0,
    "height": 64,
    "width": 64,
    "dtype": "float32",
    "seeds": {"per_prompt": 2, "offset": 1000000},
    "prompt_sets": {"parti": {"source": "p.yaml", "n_prompts": 4, "version": "v1", "subsets": []}},
    "metrics": ["a (tiny)", "b (tiny)"],
    "bootstrap": {"unit": "prompt", "samples": 200, "confidence": 0.95},
}


def _evaluation(tmp_path, name, baseline, runs, protocol):
    rng = np.random.default_rng(len(runs))
    base = {"a": rng.normal(size=8), "b": rng.normal(size=8)}
    labelled = []
    for run in runs:
        model = {m: v + rng.normal(0.3, 1.0, 8) for m, v in base.items()}
        for group in ("parti", "pooled"):
            labelled += [
                (group, r) for r in wr.win_rates(run, model, base, samples=200, clusters=list("aabbccdd"))
            ]
    frame = rates_frame(labelled, baseline, held_out=["b"])
    return tables.write_parquet(tmp_path / name / "winrates.parquet", frame, protocol=protocol)


def test_evaluations_of_one_protocol_make_one_table(tmp_path):
    vs_base = _evaluation(tmp_path, "vs_base", "base", ["balanced", "dpo", "sum"], PROTOCOL)
    vs_dpo = _evaluation(tmp_path, "vs_dpo", "dpo", ["balanced", "sum"], PROTOCOL)
    frame, protocol = combine_evaluations([vs_base, vs_dpo])
    assert protocol == PROTOCOL and frame.height == (3 + 2) * 2 * 7
    top = headline(frame, "dpo")
    assert top.columns == ["run", "parti average", "parti worst_metric", "parti majority", "pooled average",
                           "pooled worst_metric", "pooled majority"]  # fmt: skip
    assert top["run"].to_list() == ["balanced", "sum"]
    text = markdown(frame, protocol, "t")
    assert "## Win rate over dpo" in text and "### Over base, pooled (n = 8 items)" in text
    assert "| run | a | b (held out) | average | worst_metric | majority | won_all | lost_all |" in text
    md, pq, png = write_paper_table(
        frame, protocol, tmp_path / "t.md", tmp_path / "t.parquet", tmp_path / "t.png", "t"
    )
    assert png.read_bytes()[:4] == b"\x89PNG" and md.read_text() == text
    assert read_parquet_protocol(pq) == PROTOCOL


def test_evaluations_of_different_protocols_are_never_put_side_by_side(tmp_path):
    vs_base = _evaluation(tmp_path, "vs_base", "base", ["balanced"], PROTOCOL)
    other = {**PROTOCOL, "guidance_scale": 7.5, "seeds": {"per_prompt": 4, "offset": 1000000}}
    vs_dpo = _evaluation(tmp_path, "vs_dpo", "dpo", ["balanced"], other)
    with pytest.raises(ProtocolMismatch, match=r"guidance_scale: 5\.0 vs 7\.5; seeds\.per_prompt: 2 vs 4"):
        combine_evaluations([vs_base, vs_dpo])
