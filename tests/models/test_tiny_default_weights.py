"""The embedded default's committed weights: verified on every load, never pre-trained, rebuildable bit for bit.

The fast tests check the committed files against their manifest, that loading `tiny/sd15-pretrained` copies them
(with a regenerated tokenizer) and trains nothing, and that a changed file is an error naming it. The slow test
rebuilds the weights with the recorded command and compares them with the committed ones (docs/tiny_models.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pipeline.models.zoo as model_zoo
from pipeline.models.zoo import (
    MANIFEST,
    WeightsError,
    committed_dir,
    compare_builds,
    read_weights_manifest,
    resolve_pretrained,
    tokenizer_digest,
    verify_files,
)

ROOT = Path(__file__).resolve().parents[2]
ASSET = committed_dir("sd15")
# Relative difference of the final training loss allowed for a rebuild on another kind of machine (measured in
# docs/tiny_models.md).
LOSS_TOLERANCE = 0.05


def test_committed_files_match_their_manifest():
    manifest = read_weights_manifest(ASSET)
    files = manifest["files"]
    assert {"unet/diffusion_pytorch_model.safetensors", "vae/config.json", "model_index.json"} <= set(files)
    verify_files(ASSET, files, ASSET / MANIFEST)
    # Plain git files, not LFS pointers: a safetensors file starts with its 8-byte header length.
    for rel in files:
        assert not (ASSET / rel).read_bytes()[:40].startswith(b"version https://git-lfs"), rel
    assert manifest["build"]["threads"] == 1
    assert manifest["rebuild"].startswith(
        "python -m pipeline.models.zoo --build-committed tiny/sd15-pretrained"
    )
    assert manifest["tokenizer"]["sha256"] == tokenizer_digest("sd15")
    # The configs name the model, not the temporary directory it was built in.
    for rel in files:
        if rel.endswith(".json"):
            assert json.loads((ASSET / rel).read_text()).get("_name_or_path") in (
                None,
                "tiny/sd15-pretrained",
            )


def test_loading_the_default_copies_verified_weights_and_trains_nothing(tmp_path, monkeypatch):
    from diffusers import DiffusionPipeline
    from safetensors.torch import load_file

    monkeypatch.setenv("BDPO_CACHE", str(tmp_path / "cache"))

    def no_training(*args, **kwargs):
        raise AssertionError("loading the default must not pre-train")

    monkeypatch.setattr(model_zoo, "pretrain_unet", no_training)
    path = Path(resolve_pretrained("tiny/sd15-pretrained"))
    assert path.is_relative_to(tmp_path / "cache")
    assert resolve_pretrained("tiny/sd15-pretrained") == str(path)  # cached: the same directory again
    pipe = DiffusionPipeline.from_pretrained(path)
    committed = load_file(ASSET / "unet" / "diffusion_pytorch_model.safetensors")
    loaded = pipe.unet.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in committed.items())
    assert (
        pipe.vae.config.scaling_factor
        == json.loads((ASSET / "vae" / "config.json").read_text())["scaling_factor"]
    )
    assert pipe.tokenizer("a red shape on a blue background").input_ids[:2] == [49406, 320]


def test_a_changed_committed_file_is_an_error_naming_it(tmp_path, monkeypatch):
    assets = tmp_path / "assets"
    shutil.copytree(ASSET, assets / ASSET.name)
    weights = assets / ASSET.name / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(model_zoo, "ASSETS_DIR", assets)
    monkeypatch.setenv("BDPO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match=r"unet/diffusion_pytorch_model\.safetensors: sha256"):
        resolve_pretrained("tiny/sd15-pretrained")


def test_a_changed_cached_copy_is_an_error_on_load(tmp_path, monkeypatch):
    monkeypatch.setenv("BDPO_CACHE", str(tmp_path / "cache"))
    path = Path(resolve_pretrained("tiny/sd15-pretrained"))
    (path / "vae" / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match=r"vae/config\.json: sha256"):
        resolve_pretrained("tiny/sd15-pretrained")


def test_compare_builds_reports_identical_and_different_weights(tmp_path):
    shutil.copytree(ASSET, tmp_path / "copy")
    report = compare_builds(tmp_path / "copy", ASSET)
    assert all(entry["identical"] for entry in report.values())
    from safetensors.torch import load_file, save_file

    rel = "unet/diffusion_pytorch_model.safetensors"
    tensors = load_file(ASSET / rel)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, tmp_path / "copy" / rel, metadata={"format": "pt"})
    entry = compare_builds(tmp_path / "copy", ASSET)[rel]
    assert not entry["identical"] and entry["max_abs_diff"] == pytest.approx(0.5)


def test_make_test_does_not_build_the_default():
    target = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "model_zoo" not in target and "pytest" in target


VERSION_KEYS = {"_diffusers_version", "transformers_version"}


def _config_differences(built: Path, reference: Path, rel: str) -> list[str]:
    """Keys of one JSON config that differ, leaving out library versions; the measured VAE scale within 1e-4."""
    a, b = json.loads((built / rel).read_text()), json.loads((reference / rel).read_text())
    differ = []
    for key in (set(a) | set(b)) - VERSION_KEYS:
        if key == "scaling_factor" and key in a and key in b:
            if abs(a[key] - b[key]) > 1e-4 * abs(b[key]):
                differ.append(key)
        elif a.get(key) != b.get(key):
            differ.append(key)
    return differ


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_rebuilding_with_the_recorded_command_gives_the_committed_files(tmp_path):
    """The recorded command, run from scratch, rebuilds every committed file bit for bit on a machine like the one
    that built them (same CPU model, torch kernel capability and library versions; docs/tiny_models.md).

    On another CPU or torch version the float arithmetic differs (even the random initialisation does between
    torch's AVX2 and generic kernels), so identity is not expected there: the test then checks that the rebuild is
    the same kind of model (the same configs, the same final training loss within the tolerance measured in
    docs/tiny_models.md) and prints how far apart the weights are. Every machine loads the committed files, not a
    rebuild.
    """
    manifest = read_weights_manifest(ASSET)
    argv = manifest["rebuild"].split()
    assert argv[:4] == ["python", "-m", "pipeline.models.zoo", "--build-committed"], argv
    out = tmp_path / "rebuild"
    argv[argv.index("--out") + 1] = str(out)
    env = {**os.environ, "BDPO_CACHE": str(tmp_path / "cache")}
    subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=env, check=False)
    report = compare_builds(out, ASSET)
    rebuilt = read_weights_manifest(out)["build"]
    keys = ("cpu", "cpu_capability", "threads", "torch", "diffusers", "transformers")
    if all(rebuilt[k] == manifest["build"][k] for k in keys):
        assert all(e["identical"] for e in report.values()), report
        return
    print(json.dumps({"rebuilt on": {k: rebuilt[k] for k in keys}, "files": report}, indent=2))
    for rel in report:
        if rel.endswith(".json"):
            assert not _config_differences(out, ASSET, rel), (rel, _config_differences(out, ASSET, rel))
    built_loss, committed_loss = rebuilt["loss_last_tenth"], manifest["build"]["loss_last_tenth"]
    assert abs(built_loss - committed_loss) <= LOSS_TOLERANCE * committed_loss, (built_loss, committed_loss)
