"""The paper's experiment on one model family, in one command: BalancedDPO against Diffusion-DPO and the ablations.

    python -m pipeline.experiment --config configs/tiny_experiment.yaml      # or configs/sd15.yaml on a cluster

1. stage 1 once (`<run>/candidates/`): generation and scoring on Ray, or, in relabel mode, the scoring of an
   imported Pick-a-Pic-layout table whose human labels the Diffusion-DPO baseline trains on;
2. per method (`pipeline.workflows.methods`): its vote and its training, in `experiment/methods/<name>/`, a run
   directory whose `candidates/` (and `human_pairs/`) link to the run's, so every method trains on the same
   candidates. Each method's resolved config is written to `experiment/configs/<name>.yaml` first, so the
   trainings can run as separate `accelerate launch trainer/train.py --config ...` jobs side by side on a cluster
   (`until="prepare"` stops after the votes; a later run finds their finished weights and goes on);
3. two evaluations sharing one image cache (`experiment/eval/candidates/`): every method against the base, and
   every method head to head against `experiment.baseline`; the second generates nothing new;
4. the paper-style table (`experiment/table.{md,parquet,png}`) from both evaluations, whose protocols must agree.

Every part is recorded with the fingerprint of what defines it (`pipeline.workflows.parts`) in
`experiment/manifest.json`: a rerun after a stop skips finished parts, resumes unfinished ones (stage 1 by image id,
the trainer from its newest checkpoint), and refuses to mix in a part made with other settings.

From Python: `run_experiment(cfg) -> ExperimentOutputs`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from pipeline.config import RunConfig
from pipeline.evaluation import EvalOutputs, TunedModel, base_model, evaluate
from pipeline.evaluation.compare import eval_config, load_evaluation
from pipeline.evaluation.models import tuned_tag
from pipeline.evaluation.paper_table import combine_evaluations, write_paper_table
from pipeline.evaluation.protocol import differences
from pipeline.paths import ExperimentPaths, RunPaths
from pipeline.stage1.batches import ScorerFactory
from pipeline.workflows.ablation import Variant, shuffle_pair_labels, variant_config
from pipeline.workflows.methods import experiment_methods
from pipeline.workflows.parts import FINISHED, PartChanged, PartRecords, fingerprint

Until = Literal["prepare", "train", "evaluate"]
STAGE1 = "stage1"


@dataclass
class ExperimentOutputs:
    """Where the experiment wrote, what each part did in this call (`ran` or `reused`), and its seconds."""

    paths: ExperimentPaths
    candidates_dir: Path
    methods: dict[str, Path]
    configs: dict[str, Path]
    parts: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)
    evaluations: dict[str, EvalOutputs] = field(default_factory=dict)
    table: tuple[Path, Path, Path] | None = None
    frame: pl.DataFrame | None = field(default=None, repr=False)
    label_agreement: dict[str, float] = field(default_factory=dict)


def stage1_definition(cfg: RunConfig) -> dict[str, Any]:
    """What defines the candidates: the model, the prompts (or imported pairs), scoring, and generation unless the
    images are imported (relabel mode: the generation settings only shape the evaluation's images)."""
    dump = cfg.model_dump(mode="json")
    sections = ("model", "prompts", "scoring") + (() if cfg.prompts.pairs else ("generation",))
    return {k: dump[k] for k in sections}


def training_settings(dump: dict[str, Any]) -> dict[str, Any]:
    """The settings of a config dump that shape a training: model, vote, train, and the resolution imported
    images are brought to."""
    gen = dump.get("generation", {})
    return {
        "model": dump.get("model"),
        "vote": dump.get("vote"),
        "train": dump.get("train"),
        "resolution": [gen.get("height"), gen.get("width")],
    }


def method_definition(vcfg: RunConfig, variant: Variant, candidates: str) -> dict[str, Any]:
    """What defines a method's pairs and weights: the candidates and its training settings."""
    return {
        "candidates": candidates,
        **training_settings(vcfg.model_dump(mode="json")),
        "shuffled_labels": variant.shuffle_labels,
    }


def link(target: Path, link_path: Path) -> None:
    """A symlink to a shared table (made once; an existing one must point at the same place)."""
    if link_path.is_symlink():
        if link_path.resolve() != target.resolve():
            raise FileExistsError(f"{link_path} links to {link_path.resolve()}, not to {target.resolve()}")
        return
    link_path.symlink_to(target.resolve(), target_is_directory=True)


def check_candidates_made_by(candidates: Path, definition: dict[str, Any]) -> None:
    """Candidates already on disk (written before the experiment) must come from the same settings."""
    manifest = candidates / "manifest.json"
    if not manifest.is_file():
        return
    written = json.loads(manifest.read_text()).get("config", {})
    changed = differences({k: written.get(k) for k in definition}, definition)
    if changed:
        raise PartChanged(
            f"{STAGE1}: {candidates} holds candidates made with other settings ({'; '.join(changed)}; before vs "
            f"now): use another run.output_dir, or delete {candidates}"
        )


def trainer_finished(vcfg: RunConfig) -> Path | None:
    """Final weights a training left (in this process or an `accelerate launch` job) for exactly these settings.

    A training directory whose manifest shows other settings is refused: resuming or reusing it would mix them.
    """
    train_dir = RunPaths(vcfg.output_dir).train(vcfg.train.strategy)
    manifest = train_dir / "manifest.json"
    if not manifest.is_file():
        return None
    written = json.loads(manifest.read_text())
    changed = differences(
        training_settings(written.get("config", {})), training_settings(vcfg.model_dump(mode="json"))
    )
    if changed:
        raise PartChanged(
            f"{train_dir} was trained with other settings ({'; '.join(changed)}; there vs this method's config): "
            f"delete it to train this method again"
        )
    final = train_dir / "final"
    return final if written.get("status") == FINISHED and (final / "weights.json").is_file() else None


class Experiment:
    """One experiment's state across its parts; `run_experiment` calls them in order."""

    def __init__(self, cfg: RunConfig, scorer_factory: ScorerFactory | None, progress: bool) -> None:
        self.cfg, self.scorer_factory, self.progress = cfg, scorer_factory, progress
        self.run_paths = RunPaths(cfg.output_dir)
        self.paths = self.run_paths.experiment
        self.methods = experiment_methods(cfg)
        self.records = PartRecords.load(self.paths.manifest)
        self.outcome: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.finals: dict[str, Path] = {}

    def _timed(self, name: str, started: float, outcome: str) -> None:
        """This call's outcome and seconds for a part; a part that ran keeps its seconds in its record."""
        self.outcome[name] = outcome
        self.seconds[name] = round(time.perf_counter() - started, 2)
        if outcome == "ran" and name in self.records.parts:
            self.records.parts[name]["seconds"] = self.seconds[name]
        self.records.save(last_call_seconds=self.seconds)
        if self.progress:
            print(f"[experiment] {name}: {outcome} ({self.seconds[name]:.1f}s)", flush=True)

    # -- 1. stage 1 ---------------------------------------------------------------------------------------------
    def stage1(self) -> None:
        from pipeline.stage1 import run_stage1

        t0 = time.perf_counter()
        definition = stage1_definition(self.cfg)
        candidates = self.run_paths.candidates
        if self.records.is_done(STAGE1, definition, [candidates / "manifest.json"]):
            return self._timed(STAGE1, t0, "reused")
        self.records.check(STAGE1, definition, candidates)
        if STAGE1 not in self.records.parts:  # candidates made before the experiment: by the same settings?
            check_candidates_made_by(candidates, definition)
        self.records.mark(STAGE1, definition, "started")
        run_stage1(self.cfg, scorer_factory=self.scorer_factory, progress=self.progress)
        self.records.mark(STAGE1, definition, FINISHED)
        self._timed(STAGE1, t0, "ran")

    # -- 2. methods: vote, then train ---------------------------------------------------------------------------
    def method_config(self, variant: Variant) -> RunConfig:
        return variant_config(self.cfg, variant, self.paths.method(variant.name).root)

    def prepare_method(self, variant: Variant) -> tuple[RunConfig, dict[str, Any]]:
        """The method's run directory, config file and pairs; returns its config and definition."""
        from pipeline.voting import run_vote

        vcfg = self.method_config(variant)
        name = f"method:{variant.name}"
        definition = method_definition(vcfg, variant, self.records.parts[STAGE1]["fingerprint"])
        method_dir = self.paths.method(variant.name)
        self.records.check(name, definition, method_dir.root)
        config_file = self.paths.config(variant.name)
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(vcfg.to_yaml())
        record = self.records.parts.get(name)
        pairs = method_dir.pairs(vcfg.vote.strategy)
        status = record["status"] if record and record["fingerprint"] == fingerprint(definition) else None
        if status in ("voted", FINISHED) and (pairs / "manifest.json").is_file():
            return vcfg, definition
        checkpoints = method_dir.train(vcfg.train.strategy) / "checkpoints"
        if record is None and checkpoints.is_dir() and any(checkpoints.iterdir()):
            raise PartChanged(
                f"{name}: {checkpoints} holds checkpoints, but the experiment has no record of what made them; "
                f"delete {method_dir.root} to train this method here"
            )
        method_dir.root.mkdir(parents=True, exist_ok=True)
        self.records.mark(name, definition, "started")
        link(self.run_paths.candidates, method_dir.candidates)
        if self.run_paths.human_pairs.is_dir():
            link(self.run_paths.human_pairs, method_dir.human_pairs)
        run_vote(vcfg)
        if variant.shuffle_labels:
            shuffle_pair_labels(pairs, seed=vcfg.vote.seed)
        self.records.mark(name, definition, "voted")
        return vcfg, definition

    def train_method(self, variant: Variant, vcfg: RunConfig, definition: dict[str, Any]) -> None:
        from trainer.train import train

        t0 = time.perf_counter()
        name = f"method:{variant.name}"
        final = trainer_finished(vcfg)  # its definition was checked when the method was prepared
        if final is not None:
            self.finals[variant.name] = final
            if self.records.parts[name]["status"] != FINISHED:
                self.records.mark(name, definition, FINISHED, final=str(final))
            return self._timed(name, t0, "reused")
        trained = train(vcfg)  # resumes from the newest checkpoint of an interrupted run
        if trained.final_dir is None:
            raise RuntimeError(
                f"method {variant.name!r}: training stopped before final weights ({trained.train_dir})"
            )
        self.finals[variant.name] = trained.final_dir
        self.records.mark(name, definition, FINISHED, final=str(trained.final_dir))
        self._timed(name, t0, "ran")

    # -- 3. evaluations -----------------------------------------------------------------------------------------
    def evaluation(self, baseline: str | None) -> EvalOutputs:
        """Every method against the base (`baseline` None) or head to head against one method."""
        t0 = time.perf_counter()
        cfg = self.cfg
        models = [TunedModel(v.name, weights_dir=self.finals[v.name], base=cfg.model) for v in self.methods]
        if baseline is None:
            opponent, label = base_model(), "base"
        else:
            opponent, label = next(m for m in models if m.name == baseline), baseline
            models = [m for m in models if m.name != baseline]
        ecfg = eval_config(cfg)
        dump = ecfg.model_dump(mode="json")
        definition = {
            "eval": dump["eval"],
            "generation": dump["generation"],
            "model": dump["model"],
            "scoring": dump["scoring"],
            "vote_metrics": dump["vote"]["metrics"],
            "models": {m.name: tuned_tag(m, cfg) for m in [opponent, *models]},
        }
        out_dir = self.paths.evaluation(label)
        name = f"eval:vs_{label}"
        if self.records.is_done(name, definition, [out_dir / "winrates.parquet", out_dir / "manifest.json"]):
            self._timed(name, t0, "reused")
            return load_evaluation(out_dir)
        self.records.mark(name, definition, "started")
        outputs = evaluate(
            cfg, models, baseline=opponent, out_dir=out_dir, cache_dir=self.paths.eval,
            scorer_factory=self.scorer_factory, progress=self.progress,
            title="Win rate over the base" if baseline is None else f"Head to head: win rate over {baseline}",
        )  # fmt: skip
        images = {k: vars(v) for k, v in outputs.reuse.items()}
        self.records.mark(name, definition, FINISHED, images=images)
        self._timed(name, t0, "ran")
        return outputs

    # -- 4. the table -------------------------------------------------------------------------------------------
    def table(self, evaluations: list[EvalOutputs]) -> tuple[tuple[Path, Path, Path], pl.DataFrame]:
        t0 = time.perf_counter()
        files = (self.paths.table("md"), self.paths.table("parquet"), self.paths.table("png"))
        definition = {
            e.eval_dir.name: self.records.parts[f"eval:{e.eval_dir.name}"]["fingerprint"] for e in evaluations
        }
        frame, protocol = combine_evaluations([e.table for e in evaluations])
        if self.records.is_done("table", definition, files):
            self._timed("table", t0, "reused")
            return files, frame
        notes = (
            f"Methods trained on the same candidates ({self.run_paths.candidates}); `{self.cfg.experiment.baseline}` "
            f"is the Diffusion-DPO baseline (labels: {self.cfg.experiment.baseline_labels}, static reference)."
        )
        write_paper_table(
            frame, protocol, *files,
            title=f"BalancedDPO experiment: {self.cfg.run.name} ({self.cfg.model.pretrained})", notes=notes,
        )  # fmt: skip
        self.records.mark("table", definition, FINISHED)
        self._timed("table", t0, "ran")
        return files, frame

    def label_agreement(self) -> dict[str, float]:
        """Share of the dataset's human pairs on which each method's labels pick the same winner (relabel mode)."""
        from pipeline.voting import read_pairs

        human = next((v for v in self.methods if v.strategy == "human"), None)
        if human is None:
            return {}
        reference = read_pairs(self.paths.method(human.name).root, "human").select("pair_id", "image_id_w")
        out = {}
        for v in self.methods:
            if v is human:
                continue
            pairs = read_pairs(self.paths.method(v.name).root, self.method_config(v).train.strategy)
            both = reference.join(pairs.select("pair_id", w="image_id_w"), on="pair_id").collect()
            if both.height:
                out[v.name] = round(float((both["image_id_w"] == both["w"]).mean()), 4)  # type: ignore[arg-type]
        return out


def run_experiment(
    cfg: RunConfig,
    *,
    until: Until = "evaluate",
    scorer_factory: ScorerFactory | None = None,
    progress: bool = True,
) -> ExperimentOutputs:
    """Stage 1, every method's vote and training, both evaluations and the table; see the module docstring."""
    exp = Experiment(cfg, scorer_factory, progress)
    exp.stage1()
    prepared = []
    for variant in exp.methods:
        t0 = time.perf_counter()
        prepared.append((variant, *exp.prepare_method(variant)))
        exp.seconds[f"vote:{variant.name}"] = round(time.perf_counter() - t0, 2)
    agreement = exp.label_agreement()
    exp.records.save(label_agreement_with_human=agreement)
    outputs = ExperimentOutputs(
        paths=exp.paths,
        candidates_dir=exp.run_paths.candidates,
        methods={v.name: exp.paths.method(v.name).root for v in exp.methods},
        configs={v.name: exp.paths.config(v.name) for v in exp.methods},
        parts=exp.outcome,
        seconds=exp.seconds,
        label_agreement=agreement,
    )
    if until == "prepare":
        return outputs
    for variant, vcfg, definition in prepared:
        exp.train_method(variant, vcfg, definition)
    if until == "train":
        return outputs
    vs_base = exp.evaluation(None)
    head_to_head = exp.evaluation(cfg.experiment.baseline)
    outputs.evaluations = {"base": vs_base, cfg.experiment.baseline: head_to_head}
    outputs.table, outputs.frame = exp.table([vs_base, head_to_head])
    return outputs
