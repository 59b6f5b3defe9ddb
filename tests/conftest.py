"""Test-wide settings: no network, one shared cache of the tiny models, few threads on a 2-core machine."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    """Configs name files relative to the project root, as the README's commands do."""
    monkeypatch.chdir(ROOT)


@pytest.fixture(autouse=True, scope="module")
def _ray_does_not_outlive_its_module():
    """A module that starts a local Ray (stage 1 called in-process) must not leave it to the next module."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
