"""The run directory's one definition: every stage's directory, strategy names, and the table-file rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.paths import RunPaths, part_name, table_files
from pipeline.voting import StrategyError


def test_every_stage_directory_hangs_off_the_run():
    run = RunPaths(Path("runs/x"))
    assert run.candidates == Path("runs/x/candidates")
    assert run.errors == Path("runs/x/errors")
    assert run.human_pairs == Path("runs/x/human_pairs")
    assert run.pairs("majority") == Path("runs/x/pairs/majority")
    assert run.train("majority") == Path("runs/x/train/majority")
    assert run.final_weights("sum") == Path("runs/x/train/sum/final")
    assert run.eval == Path("runs/x/eval")
    assert run.ablation("static").candidates == Path("runs/x/ablation/static/candidates")
    assert run.ablation_eval == Path("runs/x/ablation/eval")
    assert run.round(2).policy == Path("runs/x/round_2/policy")


def test_a_strategy_is_found_by_its_disk_name_whoever_asks():
    run = RunPaths(Path("r"))
    assert run.pairs("single:clip") == run.pairs("single_clip") == Path("r/pairs/single_clip")
    assert run.train("single:clip") == Path("r/train/single_clip")


@pytest.mark.parametrize("bad", ["../pairs/majority", "majority/../../x", "", "Majority"])
def test_a_strategy_cannot_name_another_directory(bad):
    with pytest.raises(StrategyError, match="unknown strategy"):
        RunPaths(Path("r")).train(bad)


def test_table_files_are_the_part_files_in_order(tmp_path):
    for key in ("b", 1, "a"):
        (tmp_path / part_name(key)).write_bytes(b"")
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / f".{part_name('c')}.tmp").write_bytes(b"")  # an unfinished write
    assert [p.name for p in table_files(tmp_path)] == [
        "part-00001.parquet",
        "part-a.parquet",
        "part-b.parquet",
    ]
