"""A Hugging Face model card (`README.md`) beside every trained output, so the folder can be pushed as it is.

The card has the hub's YAML front matter (`base_model` when the base is a hub id, `library_name: diffusers`,
`pipeline_tag`, `tags`, LoRA or full fine-tune) and then says how the weights were made: strategy, voting metrics,
β, reference schedule, steps, pairs and data, read from the training manifest and the tables beside it, plus the
evaluation table once an evaluation has compared the weights with their base.

Written by the trainer when it exports `train/<strategy>/final/` (`trainer/recipe.py`), by the job for each online
round's `policy/`, and again by the evaluation, which adds its win rates (`write_model_card(..., evaluation=...)`).
Everything a card says is first gathered into `CardFacts`; `render_model_card` is a pure function of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.io import write_text_atomic

CARD_FILE = "README.md"
PROJECT_TAG = "balanced-dpo"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FAMILY_TAGS = {"sd15": "stable-diffusion", "sd21": "stable-diffusion", "sdxl": "stable-diffusion-xl"}
KINDS = ("lora", "unet", "pipeline")


def hub_base_model(ref: str) -> str | None:
    """The base model as the hub names it, or None for an embedded tiny model or a local directory."""
    from pipeline.models.refs import is_tiny

    if is_tiny(ref) or ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists():
        return None
    return ref if _HUB_ID.match(ref) else None


@dataclass(frozen=True)
class CardEvaluation:
    """One evaluated model's win rates over its base, as the evaluation wrote them."""

    run: str
    rows: list[
        dict[str, Any]
    ]  # one per statistic: metric, win_rate, ci_low, ci_high, n (more columns allowed)
    compared_with: str
    prompts: str
    seeds_per_prompt: int
    confidence: float
    bootstrap_samples: int


@dataclass(frozen=True)
class CardFacts:
    """Everything a model card states, gathered from the run's files."""

    kind: str  # lora | unet | pipeline
    base_model: str
    family: str
    strategy: str
    metrics: list[str]
    config: dict[str, Any]  # the resolved run configuration the weights were trained with
    step: int
    num_pairs: int
    num_prompts: int
    num_images: int
    global_batch: int
    refreshes: list[int]
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    vote_counts: dict[str, Any] = field(default_factory=dict)
    prompt_set: str | None = None
    evaluation: CardEvaluation | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def read_card_facts(
    model_dir: Path, train_dir: Path, kind: str | None = None, evaluation: CardEvaluation | None = None
) -> CardFacts:
    """Facts from `train_dir/manifest.json`, `model_dir/weights.json` and the run's pairs and candidates manifests.

    `kind` defaults to the one `weights.json` records (`lora` or `unet`); a complete diffusers directory
    (an online round's policy) passes `pipeline`.
    """
    manifest_path = train_dir / "manifest.json"
    manifest = _read_json(manifest_path)
    if not manifest:
        raise FileNotFoundError(
            f"no training manifest at {manifest_path}: the card describes a finished training"
        )
    weights = _read_json(model_dir / "weights.json")
    kind = kind or weights.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{model_dir}: unknown kind of weights {kind!r}; expected one of {KINDS}")
    config = manifest.get("config", {})
    strategy = config.get("train", {}).get("strategy", train_dir.name)
    run_root = train_dir.parent.parent  # RunPaths: <run>/train/<strategy>
    from pipeline.paths import RunPaths

    paths = RunPaths(run_root)
    pairs = _read_json(paths.pairs(strategy) / "manifest.json")
    candidates = _read_json(paths.candidates / "manifest.json")
    calls = candidates.get("calls") or [{}]
    return CardFacts(
        kind=kind,
        base_model=weights.get("base_model") or config.get("model", {}).get("pretrained", "unknown"),
        family=manifest.get("family") or weights.get("family", "sd15"),
        strategy=strategy,
        metrics=list(
            pairs.get("metrics") or [s["name"] for s in config.get("scoring", {}).get("scorers", [])]
        ),
        config=config,
        step=int(manifest.get("step", weights.get("step", 0))),
        num_pairs=int(manifest.get("num_pairs", 0)),
        num_prompts=int(manifest.get("num_prompts", 0)),
        num_images=int(manifest.get("num_images", 0)),
        global_batch=int(manifest.get("global_batch", 0)),
        refreshes=list(manifest.get("reference_refreshes", [])),
        eval_before=dict(manifest.get("eval_before") or {}),
        eval_after=dict(manifest.get("eval_after") or {}),
        vote_counts=dict(pairs.get("counts") or {}) | {"min_agree": pairs.get("min_agree")},
        prompt_set=calls[-1].get("prompt_set") or calls[-1].get("source"),
        evaluation=evaluation,
    )


def card_front_matter(facts: CardFacts) -> dict[str, Any]:
    """The hub's metadata block: base model (hub ids only), library, task, tags."""
    tags = ["text-to-image", "diffusers", _FAMILY_TAGS.get(facts.family, "stable-diffusion")]
    tags += ["lora"] if facts.kind == "lora" else []
    tags += ["diffusion-dpo", PROJECT_TAG, f"strategy-{facts.strategy}".replace("_", "-")]
    meta: dict[str, Any] = {}
    base = hub_base_model(facts.base_model)
    if base is not None:
        meta["base_model"] = base
        meta["base_model_relation"] = "adapter" if facts.kind == "lora" else "finetune"
    meta |= {"library_name": "diffusers", "pipeline_tag": "text-to-image", "tags": tags}
    return meta


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) >= 10**-digits or x == 0 else f"{x:.2e}"
    return str(x)


def _reference_schedule(ref: dict[str, Any]) -> str:
    mode = ref.get("mode", "none")
    if mode == "none":
        return "static (the initial model, vanilla Diffusion-DPO)"
    if mode == "hard":
        return f"dynamic: the policy copied into the reference every {ref.get('every')} steps"
    return f"dynamic: EMA of the policy (decay {ref.get('decay')}) every {ref.get('every')} steps"


def _usage(facts: CardFacts) -> str:
    base = facts.base_model
    if facts.kind == "lora":
        body = [
            "from diffusers import DiffusionPipeline",
            "",
            f'pipe = DiffusionPipeline.from_pretrained("{base}")',
            'pipe.load_lora_weights("THIS_REPO_OR_FOLDER")',
        ]
    elif facts.kind == "unet":
        body = [
            "from diffusers import DiffusionPipeline, UNet2DConditionModel",
            "",
            'unet = UNet2DConditionModel.from_pretrained("THIS_REPO_OR_FOLDER", subfolder="unet")',
            f'pipe = DiffusionPipeline.from_pretrained("{base}", unet=unet)',
        ]
    else:
        body = [
            "from diffusers import DiffusionPipeline",
            "",
            'pipe = DiffusionPipeline.from_pretrained("THIS_REPO_OR_FOLDER")',
        ]
    return "\n".join(["```python", *body, 'image = pipe("a photo of a cat").images[0]', "```"])


def _training_rows(facts: CardFacts) -> list[tuple[str, str]]:
    train = facts.config.get("train", {})
    vote = facts.config.get("vote", {})
    gen = facts.config.get("generation", {})
    counts = facts.vote_counts
    method = (
        f"LoRA (rank {train.get('lora_rank')}, alpha {train.get('lora_alpha') or train.get('lora_rank')})"
        if train.get("use_lora")
        else "full UNet fine-tune"
    )
    rows = [
        (
            "method",
            f"Diffusion-DPO, {method}" + (", fused into a full pipeline" if facts.kind == "pipeline" else ""),
        ),
        ("base model", f"`{facts.base_model}` ({facts.family})"),
        (
            "pair labels",
            f"`{facts.strategy}` vote of {len(facts.metrics)} metrics: {', '.join(facts.metrics)}",
        ),
    ]
    if counts.get("min_agree"):
        rows.append(("votes needed to keep a pair", str(counts["min_agree"])))
    if counts.get("pairs_formed"):
        rows.append(("pairs kept / formed", f"{counts.get('pairs_kept', 0):,} / {counts['pairs_formed']:,}"))
    rows += [
        ("pairing", str(vote.get("pairing", "all"))),
        (
            "β",
            f"{_fmt(float(train.get('beta', 0.0)), 1)} (loss `{train.get('loss_type', 'sigmoid')}`, applied as β/2)",
        ),
        ("reference", _reference_schedule(train.get("ref_update", {}))),
        (
            "reference refreshes",
            f"{len(facts.refreshes)}"
            + (f" (steps {_short_list(facts.refreshes)})" if facts.refreshes else ""),
        ),
        ("optimizer steps", f"{facts.step:,}"),
        ("global batch (pairs)", f"{facts.global_batch:,}"),
        (
            "learning rate",
            f"{train.get('learning_rate')} ({train.get('lr_scheduler', 'constant')}, "
            f"{train.get('lr_warmup_steps', 0)} warm-up steps, {train.get('optimizer', 'adamw')})",
        ),
        ("mixed precision", str(train.get("mixed_precision", "no"))),
        ("seed", str(train.get("seed", 0))),
    ]
    if train.get("dpop_lambda"):
        rows.append(("DPO-Positive λ", str(train["dpop_lambda"])))
    if train.get("weight_by_confidence"):
        rows.append(("pair weights", "the vote's confidence"))
    rows += [
        (
            "training pairs",
            f"{facts.num_pairs:,} over {facts.num_prompts:,} prompts ({facts.num_images:,} images)",
        ),
        ("prompt set", f"`{facts.prompt_set}`" if facts.prompt_set else "–"),
        ("candidates per prompt", str(gen.get("num_candidates", "–"))),
        (
            "candidate images",
            f"{gen.get('width')}×{gen.get('height')}, {gen.get('num_inference_steps')} steps, "
            f"guidance {gen.get('guidance_scale')}",
        ),
    ]
    return rows


def _short_list(values: Sequence[int], limit: int = 12) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", … ({len(values) - limit} more)" if len(values) > limit else "")


def _evaluation_section(ev: CardEvaluation | None) -> list[str]:
    if ev is None:
        return [
            "## Evaluation",
            "",
            "Not evaluated yet: `python -m pipeline.evaluate` adds the win rates here.",
            "",
        ]
    level = f"{ev.confidence:.0%}"
    lines = [
        "## Evaluation",
        "",
        f"Win rate over {ev.compared_with} on held-out prompts ({ev.prompts}, {ev.seeds_per_prompt} seeds each, "
        f"the same noise for both): the share of items where this model's image scores higher (ties ½), "
        f"with {level} bootstrap intervals ({ev.bootstrap_samples} resamples). `majority`: more metrics prefer "
        "this model's image.",
        "",
        f"| statistic | win rate | {level} interval | items |",
        "|---|---|---|---|",
    ]
    for row in ev.rows:
        lines.append(
            f"| {row['metric']} | {row['win_rate']:.3f} | [{row['ci_low']:.3f}, {row['ci_high']:.3f}] | {row['n']} |"
        )
    return [*lines, ""]


def render_model_card(facts: CardFacts) -> str:
    """The whole `README.md`: front matter, what the weights are, how to load them, how they were trained."""
    front = yaml.safe_dump(card_front_matter(facts), sort_keys=False, allow_unicode=True)
    what = {
        "lora": "A LoRA adapter",
        "unet": "A fine-tuned UNet",
        "pipeline": "A complete diffusers pipeline",
    }
    lines = [
        "---",
        front.rstrip("\n"),
        "---",
        "",
        f"# {facts.strategy} Diffusion-DPO of {facts.base_model}",
        "",
        f"{what[facts.kind]} for `{facts.base_model}`, trained with Diffusion-DPO on image pairs whose winner "
        f"was chosen by the `{facts.strategy}` vote of {len(facts.metrics)} preference metrics "
        "(BalancedDPO: every metric votes on every pair, the majority decides), with balanced-dpo.",
        "",
    ]
    if hub_base_model(facts.base_model) is None:
        lines += [
            f"The base model `{facts.base_model}` is not a hub id, so the front matter names no `base_model`; "
            "add it before pushing if the weights apply to a hub model.",
            "",
        ]
    lines += ["## Use", "", _usage(facts), "", "## Training", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _training_rows(facts)]
    lines.append("")
    if facts.eval_before or facts.eval_after:
        keys = [
            k
            for k in ("implicit_acc", "reward_margin", "loss")
            if k in facts.eval_before or k in facts.eval_after
        ]
        lines += [
            "Held training pairs with fixed noise, against the reference (before: the base; after: the reference "
            "of the last step):",
            "",
            "| | " + " | ".join(keys) + " |",
            "|---" * (len(keys) + 1) + "|",
            "| before | " + " | ".join(_fmt(facts.eval_before.get(k, float("nan"))) for k in keys) + " |",
            "| after | " + " | ".join(_fmt(facts.eval_after.get(k, float("nan"))) for k in keys) + " |",
            "",
        ]
    lines += _evaluation_section(facts.evaluation)
    return "\n".join(lines)


def write_model_card(
    model_dir: str | Path,
    train_dir: str | Path,
    *,
    kind: str | None = None,
    evaluation: CardEvaluation | None = None,
) -> Path:
    """Write (or refresh) `model_dir/README.md` from the run's files; returns its path.

    A card whose text would not change is left as it is, so a rerun that reuses finished weights touches nothing."""
    model_dir, train_dir = Path(model_dir), Path(train_dir)
    facts = read_card_facts(model_dir, train_dir, kind, evaluation)
    text, path = render_model_card(facts), model_dir / CARD_FILE
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    return write_text_atomic(path, text)


def read_front_matter(text: str) -> dict[str, Any]:
    """The YAML block between the leading `---` lines of a card; an error if there is none."""
    match = re.match(r"^---\n(.*?)\n---\n", text, flags=re.DOTALL)
    if match is None:
        raise ValueError("no YAML front matter: a model card starts with a block between two `---` lines")
    meta = yaml.safe_load(match.group(1))
    if not isinstance(meta, dict):
        raise ValueError(f"the front matter is not a mapping: {type(meta).__name__}")
    return meta
