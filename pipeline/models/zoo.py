"""Resolve a model reference to something `from_pretrained` loads: a hub id, a local directory, or `tiny/<family>`.

`tiny/<family>` names an embedded random-weight model of the real architecture. It is built once with a fixed seed,
saved with `save_pretrained` into a local cache (like a download), and from then on loaded back through the same
`from_pretrained(path)` call as a hub id, so the tests exercise the code path users run.

`tiny/<family>-pretrained` is the same model after a brief noise-prediction pre-training of its UNet on synthetic
images (`pipeline/models/pretrain.py`): the embedded default that DPO can actually improve. The random `tiny/<family>`
models stay what the tests use, because they build in seconds.

`tiny/sd15-pretrained`, the default, is never pre-trained on use: its weights were built once by `build_committed`
and are committed under `pipeline/models/assets/tiny-sd15-pretrained/` with each file's sha256. Float results
differ with the thread count and the CPU (even the random initialisation differs between torch's AVX2 and generic
kernels), so a build on another machine is another model; only committed weights make the default the same model
everywhere. On first use the committed files are checked against their hashes and copied into the cache with a
regenerated tokenizer; every load checks the hashes again (`docs/tiny_models.md`). `tiny/sd21-pretrained` is not a
default and is still built on first use.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from pipeline.io import atomic_directory, build_once
from pipeline.models.architectures import ARCHITECTURES, build_random_pipeline
from pipeline.models.clip_tokenizer import write_clip_tokenizer
from pipeline.models.pretrain import PretrainSettings, pretrain_unet, torch_threads
from pipeline.models.refs import (
    HUB_IDS,
    PRETRAINED_FAMILIES,
    Family,
    cache_root,
    is_tiny,
    parse_tiny,
    tiny_family,
    tiny_models,
)
from pipeline.models.synthetic import synthetic_images

# Bump when the tiny builder changes, so stale caches are rebuilt instead of silently reused.
TINY_BUILD_VERSION = 1
TINY_SEED = 0
# Bump when pipeline/models/pretrain.py changes what it trains, for the same reason (3: captions no longer depend on the
# process's hash seed; 4: training runs with a pinned thread count, and the sd15 model is committed).
PRETRAIN_VERSION = 4
# Pre-trained models whose weights are committed (built once by `build_committed`, never pre-trained on use).
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
COMMITTED: dict[Family, str] = {"sd15": "tiny-sd15-pretrained"}
MANIFEST = "manifest.json"
# Kept by a rebuild: hand-written notes beside the weights.
NOTES = "README.md"
TOKENIZER_DIRS = ("tokenizer", "tokenizer_2")


class WeightsError(RuntimeError):
    """Committed weights are missing or do not match their recorded sha256; the message names the file."""


def resolve_pretrained(ref: str) -> str:
    """A hub id or a local path is returned as is; `tiny/<family>` is built on first use and its path returned."""
    if is_tiny(ref):
        family, pretrained = parse_tiny(ref)
        return str(ensure_tiny_pipeline(family, pretrained=pretrained))
    if ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists():
        path = Path(ref).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"model directory not found: {path}")
        return str(path)
    return ref


def detect_family(ref: str, declared: str = "auto") -> Family:
    """The family of a model reference: declared, or read from its id / its UNet config."""
    if declared != "auto":
        return declared  # type: ignore[return-value]
    if is_tiny(ref):
        return tiny_family(ref)
    for family, hub_id in HUB_IDS.items():
        if ref == hub_id:
            return family
    unet_cfg = Path(resolve_pretrained(ref)) / "unet" / "config.json"
    if unet_cfg.is_file():
        cfg = json.loads(unet_cfg.read_text())
        if cfg.get("addition_embed_type") == "text_time":
            return "sdxl"
        sched = Path(resolve_pretrained(ref)) / "scheduler" / "scheduler_config.json"
        if sched.is_file() and json.loads(sched.read_text()).get("prediction_type") == "v_prediction":
            return "sd21"
        return "sd15"
    lowered = ref.lower()
    if "xl" in lowered:
        return "sdxl"
    if "2-1" in lowered or "2.1" in lowered or "sd21" in lowered:
        return "sd21"
    return "sd15"


def tiny_dir(family: Family, pretrained: bool = False) -> Path:
    if pretrained and family in COMMITTED:
        return committed_cache_dir(family)
    name = f"tiny-{family}-v{TINY_BUILD_VERSION}"
    if pretrained:
        name += f"-pretrained-p{PRETRAIN_VERSION}"
    return cache_root() / "models" / name


def ensure_tiny_pipeline(family: Family, pretrained: bool = False) -> Path:
    """Build and save a tiny pipeline once (safe under concurrent callers), then return its path.

    A committed pre-trained model is not built: its verified files are copied into the cache.
    """
    if pretrained and family in COMMITTED:
        return ensure_committed_pipeline(family)
    target = tiny_dir(family, pretrained)
    if pretrained:
        return build_once(
            target, lambda staging: build_pretrained_tiny_pipeline(family, staging), "model_index.json"
        )
    return build_once(target, lambda staging: build_tiny_pipeline(family, staging), "model_index.json")


def make_tokenizers(family: Family) -> list:
    """The family's CLIP tokenizers (one, or two for SDXL), written from open_clip's BPE file and loaded."""
    from transformers import CLIPTokenizer

    arch = ARCHITECTURES[(family, "tiny")]
    tokenizers = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, pad in enumerate(arch.pad_tokens):
            tokenizers.append(
                CLIPTokenizer.from_pretrained(write_clip_tokenizer(Path(tmp) / str(i), pad_token=pad))
            )
    return tokenizers


def make_tiny_pipeline(family: Family):
    """The tiny random-weight pipeline of `family`, in memory, reproducible from TINY_SEED."""
    pipe = build_random_pipeline(family, "tiny", make_tokenizers(family), seed=TINY_SEED)
    pipe.vae.register_to_config(scaling_factor=measured_latent_scale(pipe.vae))
    return pipe


def build_tiny_pipeline(family: Family, directory: Path):
    """Build the tiny pipeline of `family` and `save_pretrained` it into `directory`; returns the pipeline."""
    pipe = make_tiny_pipeline(family)
    pipe.save_pretrained(directory, safe_serialization=True)
    return pipe


def build_pretrained_tiny_pipeline(
    family: Family,
    directory: Path,
    settings: PretrainSettings | None = None,
    raw: Path | None = None,
):
    """Load the random tiny model (`raw`, default the cached one), pre-train its UNet (`pipeline/models/pretrain.py`),
    save it into `directory`.

    The summary (losses, seconds, settings) is written beside the weights as `pretrain.json`.
    """
    from diffusers import DiffusionPipeline

    if family not in PRETRAINED_FAMILIES:
        raise ValueError(f"no pre-trained tiny model for {family!r}; choose one of {PRETRAINED_FAMILIES}")
    pipe = DiffusionPipeline.from_pretrained(raw if raw is not None else ensure_tiny_pipeline(family))
    pipe.set_progress_bar_config(disable=True)
    summary = pretrain_unet(pipe, settings or PretrainSettings())
    pipe.save_pretrained(directory, safe_serialization=True)
    (Path(directory) / "pretrain.json").write_text(json.dumps(summary, indent=2) + "\n")
    return pipe


@torch.no_grad()
def measured_latent_scale(vae, n: int = 64, seed: int = 1234) -> float:
    """1 / std of the VAE's latents on the synthetic set: the factor that makes latents unit-variance."""
    size = vae.config.sample_size
    images = torch.from_numpy(synthetic_images(n, size=size, seed=seed))
    latents = vae.encode(images).latent_dist.mean
    return float(1.0 / latents.std())


# ---- committed pre-trained weights ------------------------------------------------------------------------------


def rebuild_command(ref: str, out: str | Path) -> str:
    """The exact command that rebuilds a committed model's files into `out`."""
    return f"python -m pipeline.models.zoo --build-committed {ref} --out {out}"


def committed_dir(family: Family) -> Path:
    """Where the committed weights of `family`'s pre-trained model live in the repository."""
    if family not in COMMITTED:
        raise ValueError(f"no committed pre-trained tiny model for {family!r}; committed: {list(COMMITTED)}")
    return ASSETS_DIR / COMMITTED[family]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_weights_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise WeightsError(f"{path}: missing; it lists the committed files and their sha256")
    return json.loads(path.read_text())


def verify_files(directory: str | Path, expected: dict[str, str], manifest: str | Path) -> None:
    """Every file in `expected` (relative path → sha256) exists under `directory` with that hash, else an error."""
    directory = Path(directory)
    for rel, digest in sorted(expected.items()):
        path = directory / rel
        if not path.is_file():
            raise WeightsError(f"{path}: missing (expected sha256 {digest}, recorded in {manifest})")
        actual = sha256_file(path)
        if actual != digest:
            raise WeightsError(
                f"{path}: sha256 {actual} does not match {digest} recorded in {manifest}; the file was changed "
                f"or corrupted. Restore the committed file (git checkout), or delete this cache copy; "
                f"docs/tiny_models.md says how the weights are rebuilt."
            )


def tokenizer_digest(family: Family) -> str:
    """sha256 of what the regenerated tokenizers consist of: the CLIP vocabulary, merges and pad tokens.

    It names the content, not transformers' file format, so a newer transformers writing other bytes is no change.
    """
    from pipeline.models.clip_tokenizer import clip_vocab_and_merges

    vocab, merges = clip_vocab_and_merges()
    pads = ARCHITECTURES[(family, "tiny")].pad_tokens
    body = json.dumps({"vocab": vocab, "merges": merges, "pad_tokens": list(pads)}, ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def committed_cache_dir(family: Family) -> Path:
    """The cache directory a committed model is copied into, named after its manifest's file hashes."""
    manifest = read_weights_manifest(committed_dir(family))
    key = hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{COMMITTED[family]}-{key}"


def ensure_committed_pipeline(family: Family) -> Path:
    """The committed pre-trained model as a loadable diffusers directory in the cache; never trains anything.

    On first use the committed files are verified and copied, and the tokenizer (not committed: it is the CLIP BPE
    that open_clip ships, 3.6 MB) is regenerated and checked against the manifest's digest. Every call verifies
    the cached copy's hashes again, so a changed file is an error that names it, never a silently different model.
    """
    source = committed_dir(family)
    manifest = read_weights_manifest(source)
    files: dict[str, str] = manifest["files"]

    def assemble(staging: Path) -> None:
        verify_files(source, files, source / MANIFEST)
        expected = manifest["tokenizer"]["sha256"]
        if tokenizer_digest(family) != expected:
            raise WeightsError(
                f"the CLIP vocabulary from open_clip_torch (pipeline/models/clip_tokenizer.py) no longer matches the "
                f"tokenizer sha256 {expected} recorded in {source / MANIFEST}"
            )
        for rel in [*files, "pretrain.json", MANIFEST]:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, staging / rel)
        for name, tokenizer in zip(TOKENIZER_DIRS, make_tokenizers(family), strict=False):
            tokenizer.save_pretrained(staging / name)

    target = build_once(committed_cache_dir(family), assemble, "model_index.json")
    verify_files(target, files, source / MANIFEST)
    return target


def _source_commit() -> dict[str, object]:
    """The git commit of the code that builds, and whether the tree had changes (None outside a checkout)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def _cpu_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _drop_build_paths(directory: Path, ref: str) -> None:
    """Replace `_name_or_path` (the temporary directory the model was loaded from) by `ref` in every config.

    Otherwise each build's configs name another temporary path and no two builds have the same bytes.
    """
    for path in sorted(directory.rglob("*.json")):
        config = json.loads(path.read_text())
        if isinstance(config, dict) and "_name_or_path" in config:
            config["_name_or_path"] = ref
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def build_committed(
    ref: str, out: str | Path, settings: PretrainSettings | None = None, notes_from: Path | None = None
) -> dict:
    """Build a committed model's files from scratch into `out` (replaced whole) and write their manifest.

    The random model is built in a temporary directory (not taken from the cache) and pre-trained, all with the
    pre-training's pinned thread count; the tokenizer is left out (regenerated on load). A `README.md` already in
    `out` (or in `notes_from`) is kept. Returns the manifest.
    """
    import platform

    import diffusers
    import transformers

    family, pretrained = parse_tiny(ref)
    if not pretrained or family not in COMMITTED:
        raise ValueError(
            f"{ref!r} has no committed weights; committed: {[f'tiny/{f}-pretrained' for f in COMMITTED]}"
        )
    settings = settings or PretrainSettings()
    out = Path(out)
    notes = notes_from or out / NOTES
    started = time.perf_counter()
    with atomic_directory(out) as staging, tempfile.TemporaryDirectory() as tmp:
        with torch_threads(settings.threads):
            build_tiny_pipeline(family, Path(tmp) / "raw")
        build_pretrained_tiny_pipeline(family, staging, settings, raw=Path(tmp) / "raw")
        for name in TOKENIZER_DIRS:
            shutil.rmtree(staging / name, ignore_errors=True)
        _drop_build_paths(staging, ref)
        files = sorted(
            p.relative_to(staging).as_posix()
            for p in staging.rglob("*")
            if p.is_file() and p.name not in ("pretrain.json", MANIFEST, NOTES)
        )
        summary = json.loads((staging / "pretrain.json").read_text())
        manifest = {
            "model": ref,
            "pretrain_version": PRETRAIN_VERSION,
            # The command that rebuilds the committed files, whatever `out` this build wrote to.
            "rebuild": rebuild_command(
                ref, committed_dir(family).relative_to(ASSETS_DIR.parent.parent.parent)
            ),
            "files": {rel: sha256_file(staging / rel) for rel in files},
            "tokenizer": {
                "regenerated_by": "pipeline.models.clip_tokenizer.write_clip_tokenizer (open_clip's CLIP BPE)",
                "sha256": tokenizer_digest(family),
            },
            "build": {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "source": _source_commit(),
                "seconds": round(time.perf_counter() - started, 1),
                "threads": settings.threads,
                "cpu": _cpu_name(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "transformers": transformers.__version__,
                "loss_first_tenth": summary["loss_first_tenth"],
                "loss_last_tenth": summary["loss_last_tenth"],
            },
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if notes.is_file():
            shutil.copyfile(notes, staging / NOTES)
    return manifest


def compare_builds(built: str | Path, reference: str | Path) -> dict[str, dict]:
    """Per file of `reference`'s manifest: equal hashes, and for weights the largest absolute difference.

    Used to check a rebuild against the committed files: identical, or how far apart.
    """
    from safetensors.torch import load_file

    built, reference = Path(built), Path(reference)
    expected = read_weights_manifest(reference)["files"]
    report: dict[str, dict] = {}
    for rel, digest in sorted(expected.items()):
        path = built / rel
        entry: dict[str, object] = {"identical": path.is_file() and sha256_file(path) == digest}
        if path.is_file() and rel.endswith(".safetensors") and not entry["identical"]:
            a, b = load_file(path), load_file(reference / rel)
            entry["max_abs_diff"] = max(float((a[k] - b[k]).abs().max()) for k in b)
            diff = sum(float((a[k] - b[k]).pow(2).sum()) for k in b) ** 0.5
            entry["relative_l2_diff"] = diff / sum(float(b[k].pow(2).sum()) for k in b) ** 0.5
        report[rel] = entry
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.models.zoo tiny/sd15-pretrained ...`: make embedded models ready now, print their paths.

    `--build-committed tiny/sd15-pretrained --out DIR` rebuilds a committed model's files from scratch (≈ 15 min on
    one thread) and compares them with the committed ones.
    """
    import argparse
    import logging

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("refs", nargs="*", metavar="REF", help=f"one of {tiny_models()}")
    parser.add_argument("--build-committed", metavar="REF", help="rebuild this committed model's files")
    parser.add_argument("--out", help="directory for --build-committed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.build_committed:
        if not args.out:
            parser.error("--build-committed needs --out DIR")
        family, _ = parse_tiny(args.build_committed)
        reference = committed_dir(family)
        committed = (reference / MANIFEST).is_file() and Path(args.out).resolve() != reference.resolve()
        manifest = build_committed(args.build_committed, args.out, notes_from=reference / NOTES)
        print(json.dumps(manifest, indent=2))
        if committed:
            report = compare_builds(args.out, reference)
            print(json.dumps({"compared_with": str(reference), "files": report}, indent=2))
            return 0 if all(e["identical"] for e in report.values()) else 1
        return 0
    if not args.refs:
        parser.error("name at least one REF, or --build-committed REF --out DIR")
    for ref in args.refs:
        started = time.perf_counter()
        path = resolve_pretrained(ref)
        print(f"{ref}: {path} ({time.perf_counter() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
