"""`python -m pipeline.experiment`: input it refuses is an error naming it, exit code 2, before any work starts."""

from __future__ import annotations

from pipeline.experiment import main


def test_an_unknown_key_is_named_with_exit_code_2(tmp_path, capsys):
    code = main(
        [
            "--config",
            "configs/tiny_experiment.yaml",
            "--set",
            f"run.output_dir={tmp_path}",
            "--set",
            "train.no_such_key=1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "train.no_such_key: unknown key" in err
    assert not (tmp_path / "experiment").exists()  # nothing was started


def test_a_missing_pair_table_is_named_with_exit_code_2(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "train.parquet"
    code = main(
        [
            "--config",
            "configs/tiny_experiment.yaml",
            "--set",
            f"run.output_dir={tmp_path / 'run'}",
            "--set",
            f"prompts.pairs={missing}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "nowhere" in err, err
