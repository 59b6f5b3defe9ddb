"""The command lines refuse what they cannot run in one line and exit code 2, before any model or Ray starts."""

from __future__ import annotations

from pipeline import evaluate, experiment


def test_the_experiment_without_labels_for_its_human_baseline_is_refused(tmp_path, capsys):
    code = experiment.main(["--config", "configs/tiny.yaml", "--set", f"run.output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(
        "error: experiment.baseline_labels is human, but the prompts carry no labels"
    )
    assert not any(tmp_path.iterdir())  # nothing written


def test_an_evaluation_of_a_model_that_is_not_there_is_refused(tmp_path, capsys):
    args = ["--config", "configs/tiny.yaml", "--set", f"run.output_dir={tmp_path}"]
    assert evaluate.main([*args, "--tuned", str(tmp_path / "x")]) == 2
    assert "directory not found" in capsys.readouterr().err
    assert evaluate.main([*args, "--tuned", "original=base", "--baseline", "unet:not a repo"]) == 2
    assert "neither a hub id" in capsys.readouterr().err
    assert evaluate.main(args) == 2  # no trained weights in this run yet
    assert "no final weights" in capsys.readouterr().err
