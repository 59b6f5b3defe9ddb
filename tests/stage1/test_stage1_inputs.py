"""Stage 1 refuses bad input before a Ray cluster starts: unknown scorers, missing models, image settings that
differ from the table's (#16), and more GPUs than a local Ray can ever have."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
from helpers.configs import ROOT, tiny_config
from helpers.stage1_scorers import make_scorer
from PIL import Image

from pipeline.config import derive_config
from pipeline.data.prompts import load_prompts
from pipeline.paths import RunPaths
from pipeline.schema import candidates_schema
from pipeline.stage1 import ScoringError, run_stage1
from pipeline.stage1.batches import ERROR_COLUMN, ScoreBatch
from pipeline.stage1.plan import generation_items
from pipeline.stage1.store import CandidateStore


def _ray_started() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _png(colour=(200, 10, 10), size=32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def write_finished_table(cfg, record_settings: bool) -> CandidateStore:
    """Candidates for every item `cfg` plans, as a finished stage-1 run of `cfg` would leave them.

    Without `record_settings` the table is what the code before #16 wrote: the rows state their size, steps and
    guidance, the manifest states nothing about them (and that code knew one seed scheme, `shared`).
    """
    from pipeline.stage1.identity import image_settings

    gen = cfg.generation
    items = generation_items(
        load_prompts(cfg.prompts),
        [cfg.model.pretrained],
        range(gen.seed_offset, gen.seed_offset + gen.num_candidates),
        0,
        gen.seed_scheme,
    )
    n = items.num_rows
    table = items
    for name, value, kind in [
        ("height", gen.height, pa.int32()),
        ("width", gen.width, pa.int32()),
        ("num_inference_steps", gen.num_inference_steps, pa.int32()),
        ("guidance_scale", gen.guidance_scale, pa.float32()),
        ("image", _png(size=gen.height), pa.binary()),
        ("latent", None, pa.list_(pa.float32())),
        ("latent_shape", None, pa.list_(pa.int32())),
        ("score_brightness", 0.5, pa.float32()),
        ("score_redness", 0.1, pa.float32()),
    ]:
        table = table.append_column(name, pa.array([value] * n, kind))
    store = CandidateStore(RunPaths(cfg.output_dir), ["brightness", "redness"])
    if record_settings:
        store.check_settings(image_settings(cfg, {cfg.model.pretrained: None}, relabel=False))
        store.record_settings()
    store.write(table.select(candidates_schema(["brightness", "redness"]).names))
    return store


@pytest.mark.parametrize("recorded", [False, True], ids=["rows-only", "manifest"])
@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("generation.num_inference_steps=8", "num_inference_steps: 4 → 8"),
        ("generation.height=64", "height: 32 → 64"),
        ("generation.guidance_scale=3.0", "guidance_scale: 5.0 → 3.0"),
    ],
)
def test_a_rerun_with_other_image_settings_is_refused_not_reported_as_done(
    tmp_path, recorded, override, named
):
    """Today's ids hash prompt, model and seed only: this rerun would find every id done ("0 new rows")."""
    from pipeline.stage1 import SettingsMismatchError

    cfg = tiny_config(tmp_path)
    if not recorded:  # the code that wrote no settings shared seeds across prompts: such a run says so
        cfg = derive_config(cfg, ["generation.seed_scheme=shared"])
    write_finished_table(cfg, recorded)
    same = run_stage1(cfg, scorer_factory=make_scorer, progress=False)
    assert same.n_written == 0 and same.n_rows == 6  # the same settings: nothing to do, as before
    with pytest.raises(SettingsMismatchError, match=named) as err:
        run_stage1(derive_config(cfg, [override]), scorer_factory=make_scorer, progress=False)
    assert "another run directory" in str(err.value) and str(cfg.output_dir / "candidates") in str(err.value)
    assert not _ray_started()


def test_settings_only_a_manifest_knows_are_checked_too(tmp_path):
    from pipeline.stage1 import SettingsMismatchError

    cfg = tiny_config(tmp_path)
    write_finished_table(cfg, record_settings=True)
    for override, named in [
        ("generation.scheduler=euler", "scheduler"),
        ("model.dtype=float16", "dtype"),
        ("generation.seed_scheme=shared", "seed_scheme: 'per_prompt' → 'shared'"),
    ]:
        with pytest.raises(SettingsMismatchError, match=named):
            run_stage1(derive_config(cfg, [override]), scorer_factory=make_scorer, progress=False)


def test_a_table_from_before_seed_schemes_is_read_as_shared_seeds(tmp_path):
    """Tables written before `seed_scheme` existed shared seeds; rerun with the new default they would gain a second
    set of candidates beside the first, so the rerun is refused and names the setting to keep them."""
    from pipeline.stage1 import SettingsMismatchError

    legacy = derive_config(tiny_config(tmp_path), ["generation.seed_scheme=shared"])
    write_finished_table(legacy, record_settings=False)
    with pytest.raises(SettingsMismatchError, match="seed_scheme: 'shared' → 'per_prompt'"):
        run_stage1(tiny_config(tmp_path), scorer_factory=make_scorer, progress=False)
    assert run_stage1(legacy, scorer_factory=make_scorer, progress=False).n_written == 0


def test_image_settings_compare_what_both_sides_state():
    from pipeline.stage1.identity import merged_settings, settings_changes

    old = {"mode": "generate", "height": 64, "models": {"base": "tiny/sd15"}}
    assert settings_changes(old, {**old, "scheduler": "ddim"}) == []  # not recorded: not judged
    assert settings_changes(old, {**old, "models": {"tuned": "x"}}) == []  # another model in the same table
    assert settings_changes(old, {**old, "models": {"base": "tiny/sd21"}}) == [
        "model tag 'base': 'tiny/sd15' → 'tiny/sd21'"
    ]
    assert merged_settings(old, {**old, "models": {"tuned": "x"}})["models"] == {
        "base": "tiny/sd15",
        "tuned": "x",
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("scoring.scorers=[{name: hpsv3}]", "unknown scorer(s) ['hpsv3']"),
        (
            "scoring.scorers=[{name: clip, pretrained: /nowhere/clip.bin}]",
            "pretrained: file or directory not found",
        ),
        ("model.pretrained=/nowhere/sd15", "model.pretrained: model directory not found: /nowhere/sd15"),
        ("model.pretrained=tiny/sd16", "unknown tiny model 'tiny/sd16'"),
    ],
)
def test_what_the_actors_would_load_is_checked_before_ray(tmp_path, capsys, override, message):
    """The CLI answers in one line with exit code 2, and no Ray cluster is started."""
    from pipeline.score import main

    started = time.perf_counter()
    code = main(
        ["--config", "configs/tiny.yaml", "--set", override, "--out-dir", str(tmp_path), "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("score: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not _ray_started()
    assert time.perf_counter() - started < 60  # import time on a busy 2-core machine; no cluster start


def test_a_local_model_directory_must_be_a_diffusers_pipeline(tmp_path):
    from pipeline.stage1 import InputError

    (tmp_path / "weights").mkdir()
    cfg = tiny_config(tmp_path, f"model.pretrained={tmp_path / 'weights'}")
    with pytest.raises(InputError, match="not a diffusers pipeline directory"):
        run_stage1(cfg, scorer_factory=make_scorer, progress=False)


def test_the_builtin_scorer_names_are_the_registry():
    import scorers
    from pipeline.stage1.plan import BUILTIN_SCORERS

    assert sorted(BUILTIN_SCORERS) == scorers.available()


def test_the_cli_reports_a_config_error_in_one_line(tmp_path, capsys):
    from pipeline.score import main

    assert main(["--config", "configs/tiny.yaml", "--set", "generation.height=30"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("score: ") and "generation.height" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("layout", "generating", "actors", "gpus"),
    [
        ("chained", True, 1 + 2, 1 * 0.5 + 2 * 0.5),  # 1 generation actor + 2 workers of one chained pool
        ("separate", True, 1 + 2 * 2, 1 * 0.5 + 2 * (0.25 + 0.25)),  # + 2 workers of each scorer's pool
        ("fused", True, 1, 1 * (0.5 + 0.5)),  # the scorers inside the one generation actor
        ("fused", False, 2, 2 * 0.5),  # relabel mode: nothing generated, so one chained pool
    ],
)
def test_the_actor_pools_each_layout_asks_ray_for(tmp_path, layout, generating, actors, gpus):
    from pipeline.stage1 import ray_plan

    scorers = "[{name: brightness, num_gpus: 0.25}, {name: redness, num_gpus: 0.25}]"
    cfg = tiny_config(
        tmp_path,
        f"scoring.layout={layout}",
        f"scoring.scorers={scorers}",
        "scoring.num_workers=2",
        "generation.num_gpus=0.5",
    )
    assert ray_plan._actors_needed(cfg, generating) == actors
    assert ray_plan._gpus_needed(cfg, generating) == pytest.approx(gpus)


def test_missing_gpus_fail_on_a_local_ray_and_wait_on_an_attached_one(tmp_path, monkeypatch):
    import ray

    from pipeline.stage1 import InputError, ray_plan

    cfg = tiny_config(tmp_path, "generation.num_gpus=1", "scoring.layout=chained")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0})
    monkeypatch.setattr(ray_plan, "started_here", lambda: True)
    with pytest.raises(InputError, match=r"needs 2 CPUs and 1 GPUs .* cannot grow"):
        ray_plan.check_resources(cfg, generating=True)
    monkeypatch.setattr(ray_plan, "started_here", lambda: False)
    with pytest.warns(UserWarning, match="waiting for the cluster's autoscaler"):
        ray_plan.check_resources(cfg, generating=True)


@pytest.mark.ray
def test_a_gpu_request_on_a_machine_without_one_fails_fast(tmp_path):
    """`generation.num_gpus: 1` without a GPU: exit 2 once the local Ray is up, instead of waiting forever."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the request can be met")
    args = ["--set=generation.num_gpus=1", "--set=scoring.scorers=[]", "--set=prompts.limit=1"]
    args += ["--set=generation.num_candidates=1", "--no-progress", f"--out-dir={tmp_path}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)  # a machine of its own, as on a laptop: the run starts a local Ray
    proc = subprocess.run(
        [sys.executable, "pipeline/score.py", "--config", "configs/tiny.yaml", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "1 GPUs" in proc.stderr and "cannot grow" in proc.stderr and "Traceback" not in proc.stderr


def test_an_image_that_cannot_be_decoded_is_one_rows_error_under_quarantine(tmp_path):
    good = _png()
    table = pa.table(
        {
            "image_id": ["a", "b", "c"],
            "prompt_id": ["p", "q", "r"],
            "prompt": ["a red square"] * 3,
            "image": [good, good[: len(good) // 2], good],
        }
    )
    specs = tiny_config(tmp_path).scoring.scorers
    out = ScoreBatch(specs, on_error="quarantine", scorer_factory=make_scorer)(table)
    errors = out.column(ERROR_COLUMN).to_pylist()
    assert errors[0] is None and errors[2] is None and "image cannot be decoded" in errors[1]
    assert np.isfinite(out.column("score_brightness").to_numpy()[[0, 2]]).all()
    with pytest.raises(ScoringError, match="prompt id q: image cannot be decoded"):
        ScoreBatch(specs, scorer_factory=make_scorer)(table)
