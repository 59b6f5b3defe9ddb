"""One run configuration: a YAML file that describes a whole run, validated into typed objects.

Every stage receives the same `RunConfig` object (or the YAML it came from), so a run is reproducible from
one file plus its command-line overrides, and the manifests record the resolved configuration.

Errors name the key and the file: a typo in a key is an error, never a silently ignored setting.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.schema import SeedScheme


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class RunSection(Section):
    name: str = "run"
    output_dir: Path = Path("runs/default")
    seed: int = 0
    # Online rounds: round r generates its candidates with the policy trained in round r-1.
    rounds: int = Field(1, ge=1)
    verbose: bool = Field(
        False, description="the libraries' own output on the console too (it always goes to <run>/logs/)"
    )


class ModelSection(Section):
    """The diffusion model to generate with and to tune.

    `pretrained` is a hub id, a local diffusers directory, or `tiny/<family>` for the embedded random-weight
    models, which are built once into a local cache and then loaded through the same `from_pretrained` path.
    """

    pretrained: str = "tiny/sd15"
    family: Literal["auto", "sd15", "sd21", "sdxl"] = "auto"
    revision: str | None = None
    variant: str | None = None
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    vae: str | None = Field(
        None,
        description="a separate VAE (hub id or local AutoencoderKL directory), e.g. an fp16-safe SDXL VAE, "
        "as the reference SDXL trainers allow; default: the model's own",
    )


class PromptsSection(Section):
    """Where prompts come from: a declarative manifest in data_manifests/, a file given directly, or (relabel
    mode) a pair dataset in the Pick-a-Pic v2 layout whose images are scored instead of generated."""

    manifest: str | None = "data_manifests/tiny.yaml"
    path: str | None = None
    pairs: str | None = Field(
        None, description="relabel mode: Pick-a-Pic-layout parquet (caption, jpg_0, jpg_1, label_0, label_1)"
    )
    format: Literal["auto", "txt", "csv", "tsv", "jsonl", "json", "parquet"] = "auto"
    column: str | None = None
    quoting: Literal["auto", "none", "csv"] = Field(
        "auto",
        description="csv/tsv quote processing; auto: csv quoted, tsv raw (a PartiPrompts field may start with a quote)",
    )
    limit: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _default_manifest_only_alone(cls, data: Any) -> Any:
        # The default manifest applies only when no other source is given.
        if isinstance(data, dict) and "manifest" not in data and (data.get("path") or data.get("pairs")):
            data = {**data, "manifest": None}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> PromptsSection:
        given = [k for k in ("manifest", "path", "pairs") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of prompts.manifest, prompts.path or prompts.pairs, got {given} (an override "
                "--set prompts.<source>=... replaces the config's source; set the other to null in a YAML file)"
            )
        return self


class GenerationSection(Section):
    num_candidates: int = Field(4, ge=1, description="images generated per prompt")
    height: int = Field(64, ge=8)
    width: int = Field(64, ge=8)
    num_inference_steps: int = Field(20, ge=1)
    guidance_scale: float = Field(7.5, ge=0.0)
    scheduler: Literal["default", "ddim", "euler", "dpmsolver"] = "default"
    batch_size: int = Field(4, ge=1, description="images per generation call")
    num_workers: int = Field(1, ge=1, description="generation actors in the Ray pool")
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per generation actor (0 on CPU)")
    seed_offset: int = 0
    seed_scheme: SeedScheme = Field(
        "per_prompt",
        description="per_prompt: each prompt's k-th image starts from its own noise, hash(prompt, seed_offset + k); "
        "shared: seed seed_offset + k for every prompt (the same starting noise across prompts)",
    )

    @field_validator("height", "width")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v % 8:
            raise ValueError(f"must be a multiple of 8, got {v}")
        return v


class ScorerSpec(Section):
    """One preference metric: a registered scorer name plus where its weights come from."""

    name: str
    pretrained: str | None = None
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int = Field(16, ge=1)
    num_gpus: float = Field(0.0, ge=0.0)
    options: dict[str, Any] = Field(default_factory=dict)


class ScoringSection(Section):
    scorers: list[ScorerSpec] = Field(default_factory=list)
    on_error: Literal["fail", "quarantine"] = "fail"
    # chained: every scorer in one scoring actor; separate: one pool per scorer; fused: the scorers inside each
    # generation actor, one process per generation worker (the fewest start-ups on one machine; relabel mode, where
    # nothing is generated, scores as chained).
    layout: Literal["chained", "separate", "fused"] = "chained"
    num_workers: int = Field(1, ge=1)

    @field_validator("scorers")
    @classmethod
    def _unique_names(cls, v: list[ScorerSpec]) -> list[ScorerSpec]:
        names = [s.name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"scorer names must be unique, repeated: {dup}")
        return v


class VoteSection(Section):
    """Stage 2: how pairs are formed inside each prompt and which strategy picks the winner (pipeline/vote.py).

    Strategies: majority, single:<metric> (on disk single_<metric>), random_metric, sum, normalized_sum,
    weighted_majority, and `human` (relabel mode: the imported dataset's own labels, no vote). Keys naming
    metrics are checked against the candidates table when the vote runs.

    Pairing: `all` pairs inside each prompt; `given` (relabel mode) the dataset's own pairs, relabelled by the
    vote; `auto` is `given` in relabel mode and `all` otherwise.
    """

    strategy: str = "majority"
    metrics: list[str] | None = Field(
        None, description="metrics that vote; default: every score_<metric> column"
    )
    pairing: Literal["auto", "all", "given", "best_vs_worst", "random_k"] = "auto"
    random_k: int = Field(4, ge=1, description="pairs drawn per prompt when pairing is random_k")
    min_agree: int | None = Field(
        None, ge=1, description="votes needed to keep a pair; default: a strict majority"
    )
    epsilon: dict[str, float] = Field(
        default_factory=dict, description="per-metric tie tolerance (default 0)"
    )
    weights: dict[str, float] = Field(
        default_factory=dict, description="per-metric weights (weighted_majority; default 1)"
    )
    normalize_scope: Literal["prompt", "table"] = "prompt"
    bad_scores: Literal["error", "drop"] = Field(
        "error", description="NaN/inf/null scores: stop, or drop those images and count them in the manifest"
    )
    seed: int = Field(0, description="seeds random_k and random_metric")
    diagnostics: bool = True
    diagnostics_max_prompts: int = Field(
        20_000, ge=1, description="diagnostics beyond the exact counts use at most this many prompts"
    )

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        from pipeline.voting.strategies import parse_strategy

        parse_strategy(v)
        return v

    @field_validator("epsilon", "weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: x for k, x in v.items() if not x >= 0}
        if bad:
            raise ValueError(f"values must be >= 0, found {bad}")
        return v


class RefUpdateSection(Section):
    """How the reference model follows the policy (BalancedDPO's dynamic reference).

    `none`: the reference stays the initial model (vanilla Diffusion-DPO). `hard`: every `every` optimizer steps
    the reference becomes a copy of the policy. `ema`: every `every` steps, ref ← decay·ref + (1 − decay)·policy.
    """

    mode: Literal["none", "hard", "ema"] = "none"
    every: int = Field(50, ge=1, description="optimizer steps between reference refreshes")
    decay: float = Field(0.99, ge=0.0, le=1.0, description="EMA decay (mode ema only)")


class TrainSection(Section):
    """Diffusion-DPO on `<run>/pairs/<strategy>/` joined to `<run>/candidates/`; outputs `<run>/train/<strategy>/`."""

    strategy: str = "majority"
    use_lora: bool = True
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float | None = Field(None, gt=0.0, description="LoRA alpha; default: the rank (scale 1)")
    lora_target_modules: list[str] = Field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    beta: float = Field(5000.0, gt=0.0, description="β of eq. 14, applied as β/2 inside the sigmoid")
    loss_type: Literal["sigmoid", "hinge", "ipo"] = "sigmoid"
    dpop_lambda: float = Field(
        0.0,
        ge=0.0,
        description="DPO-Positive λ: penalise the policy fitting the winner worse than the reference; 0: off",
    )
    weight_by_confidence: bool = False
    learning_rate: float = Field(1e-4, gt=0.0)
    scale_lr: bool = Field(
        False,
        description="multiply learning_rate by the effective batch (batch_size × gradient_accumulation_steps × "
        "processes), as the reference trainer's --scale_lr",
    )
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    lr_warmup_steps: int = Field(0, ge=0)
    max_steps: int = Field(100, ge=1, description="optimizer steps")
    batch_size: int = Field(4, ge=1, description="pairs per step per process")
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    optimizer: Literal["adamw", "adafactor"] = "adamw"
    weight_decay: float = Field(
        1e-2, ge=0.0, description="the reference trainer's --adam_weight_decay default"
    )
    prompt_dropout: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of pairs trained on the empty prompt (keeps classifier-free guidance working); "
        "drawn per (seed, position in the pair stream)",
    )
    crop: Literal["center", "random"] = Field(
        "center",
        description="images the trainer VAE-encodes (imported datasets): shorter side resized to the run's "
        "resolution (generation.height × width), then this crop",
    )
    hflip: bool = Field(False, description="mirror a seeded half of the images the trainer VAE-encodes")
    max_grad_norm: float = Field(1.0, gt=0.0)
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(3, ge=1, description="newest accelerate checkpoints kept on disk")
    resume: str = Field(
        "auto", description="auto (newest checkpoint if any) | never | a checkpoint directory"
    )
    log_every: int = Field(10, ge=1)
    tracker: Literal["tensorboard", "none"] = "tensorboard"
    eval_pairs: int = Field(
        256, ge=0, description="pairs scored with fixed noise before/after training; 0: off"
    )
    encode_batch_size: int = Field(16, ge=1, description="images / prompts per VAE or text-encoder call")
    ref_update: RefUpdateSection = Field(default_factory=RefUpdateSection)
    seed: int = 0

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        # The same grammar as vote.strategy: the name becomes a directory (`single:clip` → `single_clip`), so a
        # path such as `../pairs/majority` must never reach the file system.
        from pipeline.voting.strategies import parse_strategy

        parse_strategy(v)
        return v


class EvalSection(Section):
    """Held-out evaluation (pipeline/evaluate.py): any model against a baseline on one or more prompt sets."""

    prompts: PromptsSection | None = None
    prompt_sets: dict[str, PromptsSection] = Field(
        default_factory=dict,
        description="several named prompt sets instead of prompts: each reported on its own, then pooled",
    )
    scorers: list[ScorerSpec] | None = Field(
        None, description="metrics that judge; default scoring.scorers. Those that did not vote are held out"
    )
    baseline: str = Field(
        "base", description="the side every model is compared with: base, or a model as --baseline takes it"
    )
    seeds_per_prompt: int = Field(4, ge=1)
    seed_offset: int = 1_000_000
    seed_scheme: SeedScheme = Field(
        "per_prompt", description="as generation.seed_scheme, for the evaluation's images"
    )
    bootstrap_samples: int = Field(1000, ge=100)
    bootstrap_unit: Literal["prompt", "item"] = Field(
        "prompt",
        description="resample whole prompts with all their seeds (items of a prompt are not independent)",
    )
    confidence: float = Field(0.95, gt=0.0, lt=1.0)

    @field_validator("prompt_sets")
    @classmethod
    def _set_names(cls, v: dict[str, PromptsSection]) -> dict[str, PromptsSection]:
        for name in v:  # a table label: lowercase words, never a path
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(
                    f"prompt set name {name!r} must be lowercase letters, digits and underscores"
                )
        if "pooled" in v:
            raise ValueError("'pooled' names the union of all prompt sets; call the set something else")
        return v

    @model_validator(mode="after")
    def _one_way_to_give_prompts(self) -> EvalSection:
        if self.prompts is not None and self.prompt_sets:
            raise ValueError("give eval.prompts (one set) or eval.prompt_sets (several), not both")
        return self

    def named_prompt_sets(self) -> dict[str, PromptsSection]:
        """The prompt sets to evaluate on, by name (one `eval.prompts` is named after its manifest or file)."""
        if self.prompt_sets:
            return dict(self.prompt_sets)
        if self.prompts is None:
            return {}
        source = self.prompts.manifest or self.prompts.path or "prompts"
        return {Path(source).stem: self.prompts}


PAPER_METHODS = (
    "balanced_dpo",
    "diffusion_dpo",
    "static_reference",
    "random_metric",
    "sum",
    "normalized_sum",
)


class ExperimentSection(Section):
    """The paper's table in one command (pipeline/experiment.py): methods trained on the same candidates, each
    evaluated against the base and head to head against `baseline`. The methods are defined in
    `pipeline.workflows.methods`; `extra_methods` adds variants as `STRATEGY[:KEY=VALUE]...`."""

    methods: list[str] = Field(default_factory=lambda: list(PAPER_METHODS))
    baseline: str = Field("diffusion_dpo", description="the method every other one meets head to head")
    baseline_labels: str = Field(
        "human",
        description="Diffusion-DPO's labels: human (relabel mode: the dataset's own) or single:<metric>",
    )
    extra_methods: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_methods(self) -> ExperimentSection:
        known = set(PAPER_METHODS) | set(self.extra_methods)
        unknown = [m for m in self.methods if m not in known]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {sorted(known)} (add more in extra_methods)")
        if self.baseline not in self.methods:
            raise ValueError(f"baseline {self.baseline!r} is not among the methods {self.methods}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods are listed twice: {self.methods}")
        return self


class RunConfig(Section):
    """A whole run: prompts → candidates → pairs → tuned model → evaluation."""

    run: RunSection = Field(default_factory=RunSection)
    model: ModelSection = Field(default_factory=ModelSection)
    prompts: PromptsSection = Field(default_factory=PromptsSection)
    generation: GenerationSection = Field(default_factory=GenerationSection)
    scoring: ScoringSection = Field(default_factory=ScoringSection)
    vote: VoteSection = Field(default_factory=VoteSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    experiment: ExperimentSection = Field(default_factory=ExperimentSection)

    # Where the YAML came from; relative paths inside it resolve against the project root (the cwd).
    source: Path | None = Field(None, exclude=True)

    @property
    def output_dir(self) -> Path:
        return Path(self.run.output_dir)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_errors(err: ValidationError, where: str) -> str:
    lines = [f"invalid configuration in {where}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        found = e.get("input")
        detail = e["msg"]
        if e["type"] == "extra_forbidden":
            detail = "unknown key"
        shown = repr(found) if not isinstance(found, dict) else "{...}"
        lines.append(f"  {key}: {detail} (found {shown})")
    return "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.beta=2000` → (["train", "beta"], 2000). The value is read as YAML, so lists and dicts work."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    return key.split("."), yaml.safe_load(raw) if raw.strip() else None


def set_key(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set one dotted key in a nested dict; intermediate sections are created as needed."""
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path)}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


PROMPT_SOURCES = ("manifest", "path", "pairs")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.path=value` overrides to a nested dict (the YAML before validation).

    A prompt section has exactly one source, so overriding one (`prompts.path=my.txt` on a config that names a
    manifest) replaces the section's other source; two sources overridden at once stay an error.
    """
    sources: dict[tuple[str, ...], set[str]] = {}
    for item in overrides:
        path, value = parse_override(item)
        set_key(data, path, value)
        if len(path) >= 2 and path[-2] == "prompts" and path[-1] in PROMPT_SOURCES and value is not None:
            sources.setdefault(tuple(path[:-1]), set()).add(path[-1])
    for section_path, given in sources.items():
        if len(given) == 1:
            section = data
            for part in section_path:
                section = section[part]
            section.update({other: None for other in PROMPT_SOURCES if other not in given})
    return data


def derive_config(cfg: RunConfig, overrides: list[str] | None = None, /, **updates: Any) -> RunConfig:
    """A validated copy of `cfg` with keys replaced: `key.path=value` strings and/or dotted keyword updates,
    e.g. `derive_config(cfg, ["train.beta=2000"], **{"run.output_dir": path})`."""
    data = apply_overrides(cfg.model_dump(mode="json"), list(overrides or []))
    for dotted, value in updates.items():
        set_key(data, dotted.split("."), value)
    try:
        derived = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, "derived configuration")) from None
    derived.source = cfg.source
    return derived


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate a run configuration. `path=None` gives the defaults."""
    data: dict[str, Any] = {}
    where = "<defaults>"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: top level must be a mapping of sections, found {type(loaded).__name__}"
            )
        data = loaded
    if overrides:
        data = apply_overrides(data, list(overrides))
        where += f" (with overrides {list(overrides)})"
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, where)) from None
    cfg.source = path
    check_files(cfg, where)
    return cfg


def check_files(cfg: RunConfig, where: str) -> None:
    """Files the config names must exist now, not an hour into the run."""
    sections = [("prompts", cfg.prompts), ("eval.prompts", cfg.eval.prompts)]
    sections += [(f"eval.prompt_sets.{name}", sec) for name, sec in cfg.eval.prompt_sets.items()]
    for key, section in sections:
        if section is None:
            continue
        for attr in PROMPT_SOURCES:
            value = getattr(section, attr, None)
            embedded = value is not None and value.startswith(
                "tiny/"
            )  # built on first use (pipeline/data/embedded.py)
            exists = Path(value).exists() or bool(glob.glob(value)) if value else True
            if value and "://" not in value and not embedded and not exists:
                raise ConfigError(f"{where}: {key}.{attr}: file not found: {value} (nothing matches it)")


def add_config_arguments(parser: Any) -> None:
    """What every entry point shares: --config FILE, repeated --set key=value, and -v/--verbose."""
    parser.add_argument("--config", default="configs/tiny.yaml", help="run configuration (YAML)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one key, e.g. --set train.beta=2000 (repeatable)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the libraries' own output too (run.verbose; it always goes to <run>/logs/)",
    )


def cli_config(args: Any) -> RunConfig:
    """The config of a command line: `--config` with its `--set` overrides, and `-v` as `run.verbose`."""
    overrides = list(args.overrides) + (["run.verbose=true"] if getattr(args, "verbose", False) else [])
    return load_config(args.config, overrides)
