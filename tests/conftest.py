"""Test-wide settings: no network, one shared cache of the tiny models, the project root as working directory.

Markers (pyproject.toml): `slow` (long end-to-end checks, `make test-slow`), `ray` (starts a local Ray cluster),
`train` (runs the trainer). `make test-fast` runs the rest: unit tests of the math, tables and contracts.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from helpers.configs import ROOT, run_config
from helpers.small_demo import DemoRun, run_small_demo


def pytest_configure(config):
    """Under pytest-xdist, each worker gets its share of the cores: workers × torch threads must not exceed them.

    `make test` runs two workers on a two-core machine. Each worker's torch (and every child process and Ray worker
    it starts, which inherit OMP_NUM_THREADS) would otherwise use every core, and oversubscribed OpenMP threads
    spin against each other: `tests/trainer` under two workers took 302 and 253 s with every thread and 98 and 93 s
    with one, alternating (docs/development.md). A test comparing two runs gives both the same count
    (test_train_resume passes the worker's own to its child processes). An OMP_NUM_THREADS set by the caller is kept.
    """
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, (os.cpu_count() or 1) // int(workerinput["workercount"]))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    """Configs name files relative to the project root, as the README's commands do."""
    monkeypatch.chdir(ROOT)


@pytest.fixture
def project_root():
    return ROOT


@pytest.fixture
def make_config():
    """The one config builder (`helpers.configs.run_config`), for tests that take it as a fixture."""
    return run_config


@pytest.fixture(autouse=True, scope="module")
def _ray_does_not_outlive_its_module():
    """A module that starts a local Ray (stage 1 called in-process) must not leave it to the next module."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory, request) -> DemoRun:
    """One small real demo for the whole session (the console test and the report's browser test read it).

    Under pytest-xdist (`make test` runs two workers) the workers share one run: the first to need it runs it under
    a file lock, the other reads what it recorded.
    """
    if not hasattr(request.config, "workerinput"):  # not an xdist worker
        return run_small_demo(tmp_path_factory.mktemp("small_demo") / "run")
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # the same directory for every worker of this session
    record = shared / "small_demo.json"
    with FileLock(str(shared / "small_demo.lock")):
        if record.is_file():
            return DemoRun.from_json(record.read_text())
        demo = run_small_demo(shared / "small_demo" / "run")
        record.write_text(demo.to_json())
        return demo
