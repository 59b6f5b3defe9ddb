"""Stage 1 on real Ray: the Python API, the script, `ray job submit`, resume after a kill, a killed worker, errors.

One `ray start --head` cluster on 127.0.0.1 (unique ports and temp dir) serves the whole module: this process
connects to it, and the subprocess runs connect through RAY_ADDRESS. The resumed script run, without RAY_ADDRESS,
starts its own local Ray, as a user's laptop run does. Processes are stopped by the pid of the `ray start --block` we launched.
"""

from __future__ import annotations

import gc
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.configs import ROOT, tiny_config
from helpers.numerics import assert_close_at_scale, assert_images_close
from helpers.stage1_scorers import make_scorer, pickle_by_value, read_rows
from PIL import Image

from pipeline.config import load_config
from pipeline.io import read_manifest
from pipeline.paths import table_files
from pipeline.schema import candidates_schema, make_prompt_id, noise_seed
from pipeline.stage1 import ScoringError, generate_and_score, run_stage1

pytestmark = pytest.mark.ray

BIN = Path(sys.executable).parent
SCRIPT_ARGS = [  # the small run of the script tests: 4 prompts x 3 seeds; no scorers unless a test keeps them
    "--set=prompts.limit=4",
    "--set=generation.num_candidates=3",
    "--set=generation.num_inference_steps=8",
    "--set=generation.height=32",
    "--set=generation.width=32",
    "--set=generation.batch_size=2",
    "--set=scoring.scorers=[]",
    "--no-progress",
]


@dataclass
class Cluster:
    address: str
    dashboard: str
    env: dict[str, str]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _stop(proc: subprocess.Popen, marker: str) -> None:
    """Stop the `ray start --block` we launched, then any process still running from our own temp dir."""
    import psutil

    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
    for p in psutil.process_iter(["pid", "cmdline"]):
        if marker in " ".join(p.info["cmdline"] or []):
            p.kill()


@pytest.fixture(scope="module")
def cluster():
    import ray

    gcs, dash, client, node, obj, agent, agent_grpc, metrics, rt_env = _free_ports(9)
    temp_dir = tempfile.mkdtemp(prefix="bdpo-ray-", dir="/tmp")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
        # `ray start` turns token auth on by default, but a client only sends the token when RAY_AUTH_MODE=token
        # is in its environment before ray is imported; this throwaway 127.0.0.1 cluster goes without.
        "RAY_AUTH_MODE": "disabled",
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1"]
    cmd += [
        f"--port={gcs}",
        f"--dashboard-port={dash}",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
    ]
    cmd += [
        f"--ray-client-server-port={client}",
        f"--node-manager-port={node}",
        f"--object-manager-port={obj}",
    ]
    cmd += [f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}"]
    cmd += [f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={rt_env}"]
    cmd += ["--num-cpus=4", "--num-gpus=0", "--object-store-memory=200000000", f"--temp-dir={temp_dir}"]
    cmd += ["--disable-usage-stats"]
    if (
        ray.is_initialized()
    ):  # an earlier test's local Ray (e.g. the whole-job test) would shadow this cluster
        ray.shutdown()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{gcs}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                ray.init(address=address, log_to_driver=False)
                break
            except (ConnectionError, RuntimeError):
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(1)
        pickle_by_value()
        yield Cluster(address=address, dashboard=f"http://127.0.0.1:{dash}", env=env)
    finally:
        ray.shutdown()
        _stop(proc, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _script(cfg_path: str, out_dir: Path) -> list[str]:
    return [
        str(BIN / "python"),
        "pipeline/score.py",
        "--config",
        cfg_path,
        f"--out-dir={out_dir}",
        *SCRIPT_ARGS,
    ]


def _png_brightness(png: bytes) -> float:
    return float(np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32).mean() / 255)


def _pickapic(path: Path, captions: list[str], colours: list[tuple]) -> str:
    """A tiny pair dataset in the Pick-a-Pic layout: pair i shows colours[i] against black."""

    def png(colour) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
        return buf.getvalue()

    black = png((0, 0, 0))
    table = pa.table(
        {
            "caption": captions,
            "jpg_0": [png(c) for c in colours],
            "jpg_1": [black] * len(captions),
            "label_0": [1.0, 0.0, 0.5, 1.0][: len(captions)],
            "label_1": [0.0, 1.0, 0.5, 0.0][: len(captions)],
        }
    )
    pq.write_table(table, path)
    return str(path)


def test_python_api_separate_pools_model_override_round_and_rerun(cluster, tmp_path):
    """One actor pool per scorer; a second model, chosen seeds and an online round, as evaluation calls it.
    A second call finds every image written and does nothing."""
    cfg = tiny_config(tmp_path, "scoring.layout=separate")
    kwargs = dict(
        model_ref="tiny/sd21",
        prompts=["a red circle", "a blue  circle"],
        seeds_per_prompt=2,
        seed_offset=100,
        round=1,
        scorer_factory=make_scorer,
        progress=False,
    )
    out = run_stage1(cfg, **kwargs)
    assert (out.n_rows, out.n_errors, out.n_written) == (4, 0, 4)
    rows = read_rows(out.candidates_dir)
    assert rows.schema == candidates_schema(["brightness", "redness"])
    assert len(set(rows.column("image_id").to_pylist())) == 4
    assert set(rows.column("model").to_pylist()) == {"tiny/sd21"}
    assert set(rows.column("round").to_pylist()) == {1}
    expected_seeds = {
        noise_seed(make_prompt_id(p), k) for p in ("a red circle", "a blue circle") for k in (100, 101)
    }
    assert (
        set(rows.column("seed").to_pylist()) == expected_seeds
    )  # each prompt its own noise, indices 100, 101
    assert make_prompt_id("a blue circle") in rows.column("prompt_id").to_pylist()
    expected = [_png_brightness(b) for b in rows.column("image").to_pylist()]
    np.testing.assert_allclose(rows.column("score_brightness").to_numpy(), expected, rtol=1e-6)
    manifest = read_manifest(out.candidates_dir)
    call = manifest["calls"][-1]
    assert (manifest["n_rows"], call["n_planned"], call["safety_checker"]) == (4, 4, "off")
    assert (
        call["generation_images_per_second_per_actor"] > 0 and call["scoring_images_per_second_per_actor"] > 0
    )
    assert manifest["packages"]["ray"] and manifest["config"]["scoring"]["layout"] == "separate"

    again = generate_and_score(cfg, **kwargs)
    assert again == out.candidates_dir
    assert read_rows(again).equals(rows)
    assert read_manifest(again)["calls"][-1]["n_skipped_existing"] == 4


def test_relabel_mode_scores_pickapic_images_and_keeps_human_labels(cluster, tmp_path):
    pairs = _pickapic(
        tmp_path / "pairs.parquet",
        ["a white square", "a white square", "a grey square"],
        [(255, 255, 255), (255, 255, 255), (128, 128, 128)],
    )
    cfg = tiny_config(tmp_path, "prompts.manifest=null", f"prompts.pairs={pairs}")
    out = run_stage1(cfg, scorer_factory=make_scorer, progress=False)
    rows = read_rows(out.candidates_dir)
    # white appears in two pairs of one caption: one candidate; black is shared by the two white pairs
    assert rows.num_rows == 4
    scores = {(r["prompt"], round(r["score_brightness"], 3)) for r in rows.to_pylist()}
    assert scores == {
        ("a white square", 1.0),
        ("a white square", 0.0),
        ("a grey square", 0.502),
        ("a grey square", 0.0),
    }
    human = pq.read_table(table_files(out.human_pairs_dir)[0])
    assert human.column("label_0").to_pylist() == [1.0, 0.0, 0.5]
    assert set(human.column("image_id_0").to_pylist()) <= set(rows.column("image_id").to_pylist())


def test_relabel_quarantine_sets_aside_a_truncated_image_and_drops_identical_pairs(cluster, tmp_path):
    """A truncated image (its header reads fine) is quarantined at import, before Ray; the job completes."""
    path = Path(
        _pickapic(tmp_path / "p.parquet", ["a white square", "a grey square"], [(255,) * 3, (128,) * 3])
    )
    table = pq.read_table(path)
    jpg_0 = table.column("jpg_0").to_pylist()
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buf, format="PNG", compress_level=0)
    jpg_0[1] = buf.getvalue()[:3000]
    identical = {k: [v[0]] for k, v in table.to_pydict().items()}
    identical["jpg_1"] = identical["jpg_0"]  # a third row showing the white square twice
    rows = {k: v + identical[k] for k, v in {**table.to_pydict(), "jpg_0": jpg_0}.items()}
    pq.write_table(pa.table(rows), path)
    overrides = ("prompts.manifest=null", f"prompts.pairs={path}", "scoring.on_error=quarantine")
    out = run_stage1(tiny_config(tmp_path, *overrides), scorer_factory=make_scorer, progress=False)
    # white and black of "a white square", black of "a grey square"; the truncated image is quarantined
    assert (out.n_rows, out.n_errors) == (3, 1)
    assert "not a readable image" in read_rows(out.errors_dir).column("error")[0].as_py()
    human = pq.read_table(table_files(out.human_pairs_dir)[0])
    assert human.num_rows == 1  # the identical row and the one showing the truncated image are dropped
    counts = read_manifest(out.human_pairs_dir)["counts"]
    assert counts["rows_dropped_identical_images"] == 1 and counts["rows_dropped_unreadable_image"] == 1


def test_failing_scorer_fails_the_job_naming_prompt_ids(cluster, tmp_path):
    pairs = _pickapic(tmp_path / "p.parquet", ["a zebra at noon", "a red circle"], [(9, 9, 9), (200, 0, 0)])
    cfg = tiny_config(tmp_path, "prompts.manifest=null", f"prompts.pairs={pairs}", scorers=("picky",))
    with pytest.raises(ScoringError, match=make_prompt_id("a zebra at noon")):
        run_stage1(cfg, scorer_factory=make_scorer, progress=False)


def test_quarantine_sends_failing_rows_to_errors(cluster, tmp_path):
    pairs = _pickapic(tmp_path / "p.parquet", ["a zebra at noon", "a red circle"], [(9, 9, 9), (200, 0, 0)])
    overrides = ("prompts.manifest=null", f"prompts.pairs={pairs}", "scoring.on_error=quarantine")
    cfg = tiny_config(tmp_path, *overrides, scorers=("picky",))
    out = run_stage1(cfg, scorer_factory=make_scorer, progress=False)
    assert (out.n_rows, out.n_errors) == (2, 2)
    errors = read_rows(out.errors_dir).to_pylist()
    assert {e["prompt"] for e in errors} == {"a zebra at noon"}
    assert all("cannot score prompts mentioning 'zebra'" in e["error"] for e in errors)
    assert np.isfinite(read_rows(out.candidates_dir).column("score_picky").to_numpy()).all()
    again = run_stage1(cfg, scorer_factory=make_scorer, progress=False)
    assert again.n_written == 0  # quarantined rows count as done: delete errors/ to retry them


def test_a_killed_ray_worker_still_yields_every_row_exactly_once(cluster, tmp_path):
    from ray.util.state import list_actors

    cfg = tiny_config(
        tmp_path, "prompts.limit=6", "generation.num_inference_steps=10", "generation.batch_size=1"
    )
    result: dict = {}
    runner = threading.Thread(
        target=lambda: result.update(out=run_stage1(cfg, scorer_factory=make_scorer, progress=False))
    )
    runner.start()
    candidates = tmp_path / "run" / "candidates"
    pid, written_at_kill = None, None
    deadline = time.time() + 600  # the first file can take minutes on a loaded machine
    while pid is None and time.time() < deadline and runner.is_alive():
        if list(candidates.glob("part-*.parquet")):
            actors = list_actors(address=cluster.address, filters=[("state", "=", "ALIVE")])
            # The small runs' fused layout: the scorers live in the generation actor. (Actors of the module's
            # earlier tests may still be listed as alive on this shared cluster.)
            gens = [a for a in actors if "GenerateAndScoreBatch" in a.class_name]
            if gens:
                written_at_kill = read_rows(candidates).num_rows
                pid = gens[0].pid
                # The restarted actor gets its constructor arguments (Ray Data's serialized UDF and context) from
                # the object store: they are held by the running dataset, so a collection in the driver keeps them.
                gc.collect()
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    runner.join(timeout=300)
    assert pid is not None, "no generation actor was found to kill"
    assert written_at_kill < 12, "the job finished before the kill: make it longer"
    out = result["out"]
    ids = read_rows(out.candidates_dir).column("image_id").to_pylist()
    assert len(ids) == len(set(ids)) == out.n_rows == 12


@pytest.mark.e2e
def test_ray_job_submit_then_the_script_killed_halfway_and_resumed_locally_ends_with_its_rows(
    cluster, tmp_path
):
    """The command users run on a cluster, with the shipped config's real (tiny) scorers. Then the script on the
    same cluster, SIGKILLed after its first file, and restarted on its own local Ray (as on a laptop): it must end
    with exactly the submitted job's images, byte for byte up to float rounding."""
    submitted = tmp_path / "job"
    args = [a for a in SCRIPT_ARGS if not a.startswith("--set=scoring.scorers")]
    # Hidden directories (.venv, .git, other tools' outputs) are not the project; Ray only reads .gitignore.
    excludes = json.dumps({"excludes": [".[a-zA-Z_]*", "runs"]})
    cmd = [str(BIN / "ray"), "job", "submit", f"--address={cluster.dashboard}", "--working-dir=."]
    cmd += [f"--runtime-env-json={excludes}"]
    cmd += [
        "--",
        "python",
        "pipeline/score.py",
        "--config=configs/tiny.yaml",
        f"--out-dir={submitted}",
        *args,
    ]
    job = subprocess.run(cmd, cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    assert "succeeded" in job.stdout and "12 new images (0 already there)" in job.stdout
    expected = read_rows(submitted / "candidates")
    assert expected.num_rows == 12 and len(set(expected.column("image_id").to_pylist())) == 12
    metrics = [s.name for s in load_config("configs/tiny.yaml").scoring.scorers]
    assert expected.schema == candidates_schema(metrics) and len(metrics) >= 3
    for name in metrics:
        assert np.isfinite(expected.column(f"score_{name}").to_numpy()).all()

    out_dir = tmp_path / "resumed"
    cmd = _script("configs/tiny.yaml", out_dir)
    on_cluster = {**cluster.env, "RAY_ADDRESS": cluster.address}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=on_cluster, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    candidates = out_dir / "candidates"
    deadline = time.time() + 240
    while not list(candidates.glob("part-*.parquet")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    partial = len(read_rows(candidates)) if list(candidates.glob("part-*.parquet")) else 0
    assert 0 < partial < 12, f"the kill did not land halfway ({partial} of 12 rows written)"

    local = {k: v for k, v in cluster.env.items() if k != "RAY_ADDRESS"}
    resumed = subprocess.run(cmd, cwd=ROOT, env=local, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{12 - partial} new images ({partial} already there)" in resumed.stdout
    assert "[score] 12 candidates" in resumed.stdout
    got = read_rows(candidates)
    assert got.column("image_id").equals(expected.column("image_id"))
    # The resumed run batches the remaining items differently: equal up to float rounding (tests/helpers/numerics.py).
    assert_images_close(got.column("image").to_pylist(), expected.column("image").to_pylist())
    assert_close_at_scale(
        np.stack(got.column("latent").to_numpy(zero_copy_only=False)),
        np.stack(expected.column("latent").to_numpy(zero_copy_only=False)),
    )
