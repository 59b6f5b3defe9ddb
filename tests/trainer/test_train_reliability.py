"""Reruns and resumes never lie (#16): a finished run is reused only by the same run, another one is refused with
each change named, `resume: never` starts really fresh, and a planted or damaged checkpoint never loads."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from helpers.configs import train_config
from safetensors.torch import load_file

from pipeline.config import RunConfig, derive_config
from pipeline.testing.toy_run import copy_toy_run
from trainer.recipe import train
from trainer.train import main

pytestmark = pytest.mark.train


def checkpoint(run: Path, step: int) -> Path:
    return run / "train" / "majority" / "checkpoints" / f"checkpoint-{step:07d}"


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    """Every file's modification time and content hash: whether a directory was rewritten at all."""
    return {
        str(p.relative_to(directory)): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def base_config(run: Path) -> RunConfig:
    return train_config(run, max_steps=2, checkpoint_every=1, eval_pairs=8)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-step run (checkpoints 1 and 2, final weights), trained once for the module."""
    run = copy_toy_run(tmp_path_factory.mktemp("finished") / "run")
    train(base_config(run))
    return run


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def test_the_same_run_again_is_reused_and_reports_what_it_trained(run):
    cfg = base_config(run)
    before = json.loads((run / "train" / "majority" / "manifest.json").read_text())
    final = snapshot(run / "train" / "majority" / "final")
    again = train(cfg)
    assert again.step == 2
    manifest = json.loads(again.manifest.read_text())
    assert manifest["resumed_from"] == str(checkpoint(run, 2)) and manifest["status"] == "finished"
    assert snapshot(run / "train" / "majority" / "final") == final  # not even rewritten
    assert again.eval_before == before["eval_before"] and again.eval_after == before["eval_after"]
    assert manifest["fingerprint"] == before["fingerprint"]


def test_the_readmes_overrides_after_a_finished_run_are_refused_naming_each(run, capsys):
    """`--set train.beta=2000 --set train.ref_update.mode=ema` used to train 0 steps, keep the old weights and
    write the new settings into the manifest."""
    config = run / "run.yaml"
    config.write_text(base_config(run).to_yaml())
    manifest = (run / "train" / "majority" / "manifest.json").read_text()
    final = snapshot(run / "train" / "majority" / "final")
    readme = ["--set", "train.beta=2000", "--set", "train.ref_update.mode=ema"]
    assert main(["--config", str(config), *readme]) == 2
    err = capsys.readouterr().err
    assert "train.beta: 500.0 → 2000.0" in err and "train.ref_update.mode: 'none' → 'ema'" in err
    assert "--set train.resume=never" in err and "run.output_dir" in err and "Traceback" not in err
    assert (run / "train" / "majority" / "manifest.json").read_text() == manifest
    assert snapshot(run / "train" / "majority" / "final") == final

    # As the message says: start fresh. Old checkpoints and final weights go; the new ones are of this config.
    old_weights = load_file(checkpoint(run, 2) / "model.safetensors")
    assert main(["--config", str(config), *readme, "--set", "train.resume=never"]) == 0
    fresh = json.loads((run / "train" / "majority" / "manifest.json").read_text())
    assert fresh["resumed_from"] is None and fresh["step"] == 2
    assert (
        fresh["config"]["train"]["beta"] == 2000
        and fresh["fingerprint"]["train"]["ref_update"]["mode"] == "ema"
    )
    new_weights = load_file(checkpoint(run, 2) / "model.safetensors")
    assert any(not torch.equal(old_weights[k], new_weights[k]) for k in old_weights)
    info = json.loads((run / "train" / "majority" / "final" / "weights.json").read_text())
    assert info["fingerprint"] == fresh["fingerprint_digest"]


@pytest.mark.parametrize(
    ("override", "change"),
    [
        ("train.batch_size=2", "train.batch_size: 4 → 2"),  # a resume would skip data silently
        ("train.max_steps=1", "at step 2, beyond train.max_steps=1"),
    ],
)
def test_a_resume_at_another_batch_size_or_past_max_steps_is_refused(run, override, change):
    from trainer.fingerprint import FingerprintMismatchError

    with pytest.raises(FingerprintMismatchError, match=change.replace("[", r"\[")):
        train(derive_config(base_config(run), [override]))


def test_pairs_changed_by_a_new_vote_are_another_run(run):
    from trainer.fingerprint import FingerprintMismatchError

    part = run / "pairs" / "majority" / "part-0.parquet"
    table = pq.read_table(part)
    pq.write_table(table.slice(0, table.num_rows - 4), part)
    with pytest.raises(FingerprintMismatchError, match=r"pairs.rows: 24 → 20"):
        train(base_config(run))


class Payload:
    """Unpickling this creates a marker file: what a crafted checkpoint could do with any code instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant_accelerate_checkpoint(run: Path, marker: Path) -> Path:
    """`checkpoint-0000009` in accelerate's format: real weights and optimizer state (data-only files a
    weights-only load accepts), and a payload in every pickle accelerate unpickles without that guard."""
    planted = checkpoint(run, 9)
    planted.mkdir()
    weights = load_file(checkpoint(run, 2) / "model.safetensors")
    shutil.copy(checkpoint(run, 2) / "model.safetensors", planted / "model.safetensors")
    params = [torch.nn.Parameter(t) for t in weights.values()]
    torch.save(torch.optim.AdamW(params, lr=1e-4).state_dict(), planted / "optimizer.bin")
    for name in ("scheduler.bin", "random_states_0.pkl", *(f"custom_checkpoint_{i}.pkl" for i in range(3))):
        (planted / name).write_bytes(pickle.dumps(Payload(marker)))
    return planted


def test_a_planted_pickle_checkpoint_never_runs(run, tmp_path, caplog):
    marker = tmp_path / "code-ran"
    planted = plant_accelerate_checkpoint(run, marker)
    cfg = derive_config(base_config(run), ["train.max_steps=3"])
    with caplog.at_level(logging.WARNING, logger="trainer"):
        try:
            out = train(cfg)  # resume: auto finds the planted directory first
        finally:
            assert not marker.exists(), "a checkpoint's pickle was unpickled"
    assert "holds pickle files" in caplog.text and str(planted) in caplog.text
    manifest = json.loads(out.manifest.read_text())
    assert manifest["resumed_from"] == str(checkpoint(run, 2)) and out.step == 3

    from trainer.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="holds pickle files"):  # named explicitly: refused
        train(derive_config(cfg, [f"train.resume={planted}"]))
    assert not marker.exists()


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(run, caplog):
    model = checkpoint(run, 2) / "model.safetensors"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="trainer"):
        out = train(base_config(run))
    assert str(model) in caplog.text and "resuming from the older checkpoint" in caplog.text
    assert json.loads(out.manifest.read_text())["resumed_from"] == str(checkpoint(run, 1))
    assert out.step == 2 and (run / "train" / "majority" / "final" / "weights.json").is_file()
