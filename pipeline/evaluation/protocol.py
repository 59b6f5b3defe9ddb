"""The evaluation protocol: every setting besides the models that moves a win rate, recorded and compared.

Win rates move with the sampler, the number of steps, the guidance scale, the resolution, the precision, the seeds
and the prompts, often by more than the difference between two methods. So the protocol travels with the numbers:
it is written into every win-rate file (a Markdown header, Parquet key-value metadata) and the evaluation's
manifest, and two evaluations are only compared, or an image cache only reused, when their protocols agree.
A mismatch is refused with a message that names each setting that differs and both values.

Two levels:
- the *image settings* (`IMAGE_KEYS`): what defines an image besides its prompt, model and seed. Images cached
  under other settings must never be mixed with new ones;
- the *full protocol*: image settings plus seeds, prompt sets (name, where they come from, a version hash of their
  prompt ids), metrics (name and weights) and the bootstrap.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.config import PromptsSection, RunConfig, ScorerSpec
from pipeline.data.prompts import PromptSet

IMAGE_KEYS = ("sampler", "num_inference_steps", "guidance_scale", "height", "width", "dtype")
PARQUET_KEY = b"balanced_dpo.protocol"


class ProtocolMismatch(ValueError):
    """Two protocols that must agree do not; the message names every setting that differs."""


def image_settings(cfg: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """What defines a generated image besides its prompt, model and seed (from a config or its JSON dump)."""
    data = cfg.model_dump(mode="json") if isinstance(cfg, RunConfig) else cfg
    gen, model = data.get("generation", {}), data.get("model", {})
    return {
        "sampler": gen.get("scheduler"),
        "num_inference_steps": gen.get("num_inference_steps"),
        "guidance_scale": gen.get("guidance_scale"),
        "height": gen.get("height"),
        "width": gen.get("width"),
        "dtype": model.get("dtype"),
    }


def prompt_set_version(prompt_set: PromptSet) -> str:
    """A short hash of the prompt ids in order: two sets with the same version hold the same prompts."""
    ids = "\n".join(prompt_set.table["prompt_id"].to_list())
    return hashlib.sha256(ids.encode()).hexdigest()[:12]


def describe_prompt_set(section: PromptsSection, prompt_set: PromptSet) -> dict[str, Any]:
    subsets = [s for s in prompt_set.table["subset"].unique(maintain_order=True).to_list() if s is not None]
    return {
        "source": section.manifest or section.path,
        "limit": section.limit,
        "n_prompts": len(prompt_set),
        "version": prompt_set_version(prompt_set),
        "subsets": subsets,
    }


def describe_metric(spec: ScorerSpec) -> str:
    """A metric as the protocol names it: its name and where its weights come from."""
    return f"{spec.name} ({spec.pretrained or 'default weights'})"


def evaluation_protocol(
    cfg: RunConfig,
    prompt_sets: Mapping[str, tuple[PromptsSection, PromptSet]],
    scorers: Iterable[ScorerSpec],
) -> dict[str, Any]:
    """The full protocol of an evaluation run with `cfg` on `prompt_sets`, scored by `scorers`."""
    ev = cfg.eval
    return {
        **image_settings(cfg),
        "seeds": {"per_prompt": ev.seeds_per_prompt, "offset": ev.seed_offset, "scheme": ev.seed_scheme},
        "prompt_sets": {name: describe_prompt_set(sec, ps) for name, (sec, ps) in prompt_sets.items()},
        "metrics": [describe_metric(s) for s in scorers],
        "bootstrap": {
            "unit": ev.bootstrap_unit,
            "samples": ev.bootstrap_samples,
            "confidence": ev.confidence,
        },
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    """Each setting that differs, as `key: expected vs found` (nested keys dotted; a missing one is `absent`)."""
    a, b = _flatten(expected), _flatten(found)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "absent") != b.get(key, "absent"):
            out.append(f"{key}: {a.get(key, 'absent')!r} vs {b.get(key, 'absent')!r}")
    return out


def check_same(expected: Mapping[str, Any], found: Mapping[str, Any], what: str) -> None:
    """Refuse to go on when two protocols differ; `what` says which two things were being compared."""
    diff = differences(expected, found)
    if diff:
        raise ProtocolMismatch(f"{what}: the protocols differ in {len(diff)} setting(s): " + "; ".join(diff))


def check_image_cache(cfg: RunConfig, candidates_manifest: Path) -> None:
    """Images cached in a directory were made with the settings of the config that wrote its manifest last.

    Every write into the cache goes through this check first, so the last writer's settings are every image's.
    """
    if not candidates_manifest.is_file():
        return
    written = json.loads(candidates_manifest.read_text()).get("config")
    if not written:
        return
    cached = image_settings(written)
    check_same(
        cached,
        image_settings(cfg),
        f"the images cached in {candidates_manifest.parent} (cached vs now; use another cache directory "
        f"for other settings)",
    )


def seeds_phrase(seeds: Mapping[str, Any]) -> str:
    """How the items' seeds were drawn; protocols written before `scheme` was recorded shared them across prompts."""
    offset, n = seeds.get("offset"), seeds.get("per_prompt")
    if seeds.get("scheme", "shared") == "shared":
        return f"seeds {offset} + k for k < {n} per prompt (the same for every prompt)"
    return f"{n} seeds per prompt, each its own noise (noise_seed(prompt, {offset} + k), k < {n})"


def summary_line(protocol: Mapping[str, Any]) -> str:
    """The protocol in one readable line, for the header of a Markdown table."""
    seeds = protocol.get("seeds", {})
    sets = ", ".join(
        f"{name} ({info['n_prompts']} prompts, {info['source']}, version {info['version']})"
        for name, info in protocol.get("prompt_sets", {}).items()
    )
    boot = protocol.get("bootstrap", {})
    return (
        f"sampler `{protocol['sampler']}`, {protocol['num_inference_steps']} steps, guidance "
        f"{protocol['guidance_scale']:g}, {protocol['height']}×{protocol['width']}, {protocol['dtype']}; "
        f"{seeds_phrase(seeds)}; prompt sets: {sets}; "
        f"metrics: {', '.join(protocol.get('metrics', []))}; bootstrap over {boot.get('unit')}s, "
        f"{boot.get('samples')} resamples, {boot.get('confidence', 0):.0%} intervals"
    )


def to_parquet_metadata(protocol: Mapping[str, Any]) -> dict[bytes, bytes]:
    return {PARQUET_KEY: json.dumps(protocol, sort_keys=True).encode()}


def read_parquet_protocol(path: str | Path) -> dict[str, Any]:
    """The protocol stored in a win-rate Parquet file; an error naming the file when it has none."""
    metadata = pq.read_schema(path).metadata or {}
    if PARQUET_KEY not in metadata:
        raise ProtocolMismatch(
            f"{path}: no protocol in this file's metadata (not written by this evaluation?)"
        )
    return json.loads(metadata[PARQUET_KEY])
