"""The whole job: stage 1 → vote → train → evaluate, for `run.rounds` online rounds.

From Python: `run_job(cfg) -> JobOutputs`, the paths of every table, weight file and report; the command line is
`python -m pipeline.job`.

With one round, everything goes to `<run>/` exactly as the stages' own CLIs would write it (`candidates/`,
`pairs/<strategy>/`, `train/<strategy>/`, `eval/`). With R > 1 rounds, round r works in `<run>/round_<r>/`: it
generates its candidates with round r−1's policy, votes, and trains starting from that policy (which is also the
reference at the start of the round). Between rounds the policy is saved as a complete diffusers directory
(`round_<r>/policy/`, LoRA fused into the UNet) so the next round loads it like any model. Each round gets fresh
candidate seeds. `<run>/eval/` then compares every round's policy with the original base on the held-out prompts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import ModelSection, RunConfig, derive_config
from pipeline.evaluation import EvalOutputs, TunedModel, evaluate
from pipeline.evaluation.compare import card_evaluation
from pipeline.io import atomic_directory
from pipeline.paths import RunPaths
from pipeline.reporting.model_card import write_model_card
from pipeline.stage1.batches import ScorerFactory
from pipeline.voting import disk_name


@dataclass
class RoundOutputs:
    """What one round wrote."""

    round: int
    run_dir: Path
    model: str  # the model this round generated with and started training from
    candidates_dir: Path
    pairs_dir: Path
    train_dir: Path
    final_dir: Path
    policy_dir: Path | None = None  # complete diffusers directory of this round's policy (R > 1 only)


@dataclass
class JobOutputs:
    rounds: list[RoundOutputs]
    eval: EvalOutputs | None
    tuned: list[TunedModel] = field(
        default_factory=list
    )  # what was evaluated: `evaluate(cfg, out.tuned)` again
    seconds: dict[str, float] = field(default_factory=dict)

    def paths(self) -> dict[str, Path]:
        """Every table and report by a readable name, for printing."""
        out: dict[str, Path] = {}
        for r in self.rounds:
            prefix = f"round {r.round} " if len(self.rounds) > 1 else ""
            out[prefix + "candidates"] = r.candidates_dir
            out[prefix + "pairs"] = r.pairs_dir
            if (r.pairs_dir / "diagnostics").is_dir():
                out[prefix + "vote diagnostics"] = r.pairs_dir / "diagnostics"
            out[prefix + "training logs and checkpoints"] = r.train_dir
            out[prefix + "final weights"] = r.final_dir
            if r.policy_dir is not None:
                out[prefix + "policy pipeline"] = r.policy_dir
        if self.eval is not None:
            out.update(self.eval.paths())
        return out


def round_config(cfg: RunConfig, r: int, model: str) -> RunConfig:
    """Round r's configuration: its own directory, its starting model, fresh candidate seeds."""
    paths = RunPaths(cfg.output_dir)
    run_dir = paths.root if cfg.run.rounds == 1 else paths.round(r).root
    return derive_config(
        cfg,
        **{
            "run.output_dir": str(run_dir),
            "model.pretrained": model,
            "generation.seed_offset": cfg.generation.seed_offset + r * cfg.generation.num_candidates,
            "train.strategy": disk_name(cfg.vote.strategy),
        },
    )


def export_policy(base: ModelSection, weights_dir: Path, target: Path) -> Path:
    """Save base + tuned weights as one diffusers directory (LoRA fused), written to a temporary name first."""
    from trainer.export import load_tuned_pipeline

    pipe = load_tuned_pipeline(base, weights_dir, device="cpu")
    if getattr(pipe, "get_list_adapters", None) and pipe.get_list_adapters():
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    with atomic_directory(target) as staging:
        pipe.save_pretrained(staging, safe_serialization=True)
        write_model_card(staging, Path(weights_dir).parent, kind="pipeline")
    return target


def run_round(
    cfg: RunConfig, r: int, model: str, scorer_factory: ScorerFactory | None, progress: bool, timings: dict
) -> tuple[RunConfig, RoundOutputs]:
    """Stage 1, vote and training of one round; returns the round's config and outputs."""
    from pipeline.stage1 import run_stage1
    from pipeline.voting import run_vote
    from trainer.train import train

    rcfg = round_config(cfg, r, model)
    t0 = time.perf_counter()
    stage1 = run_stage1(rcfg, round=r, scorer_factory=scorer_factory, progress=progress)
    t1 = time.perf_counter()
    pairs_dir = run_vote(rcfg)
    t2 = time.perf_counter()
    trained = train(rcfg)
    t3 = time.perf_counter()
    if trained.final_dir is None:
        raise RuntimeError(f"round {r}: training stopped before writing final weights ({trained.train_dir})")
    key = f"round_{r}_" if cfg.run.rounds > 1 else ""
    timings.update({key + "stage1_s": t1 - t0, key + "vote_s": t2 - t1, key + "train_s": t3 - t2})
    return rcfg, RoundOutputs(
        round=r,
        run_dir=rcfg.output_dir,
        model=model,
        candidates_dir=stage1.candidates_dir,
        pairs_dir=pairs_dir,
        train_dir=trained.train_dir,
        final_dir=trained.final_dir,
    )


def run_job(
    cfg: RunConfig,
    *,
    scorer_factory: ScorerFactory | None = None,
    progress: bool = True,
    run_eval: bool = True,
) -> JobOutputs:
    """Every round, then the evaluation of every round's policy against the original base."""
    if run_eval and cfg.eval.prompts is not None:
        from pipeline.data.prompts import load_prompts

        load_prompts(cfg.eval.prompts)  # a bad evaluation prompt file is found now, not after training
    timings: dict[str, float] = {}
    rounds: list[RoundOutputs] = []
    tuned: list[TunedModel] = []
    model = cfg.model.pretrained
    for r in range(cfg.run.rounds):
        rcfg, out = run_round(cfg, r, model, scorer_factory, progress, timings)
        name = disk_name(cfg.vote.strategy) if cfg.run.rounds == 1 else f"round_{r}"
        tuned.append(TunedModel(name, weights_dir=out.final_dir, base=rcfg.model))
        if r + 1 < cfg.run.rounds:
            t0 = time.perf_counter()
            out.policy_dir = export_policy(rcfg.model, out.final_dir, RunPaths(out.run_dir).policy)
            timings[f"round_{r}_export_s"] = time.perf_counter() - t0
            model = str(out.policy_dir)
        rounds.append(out)
    evaluation = None
    if run_eval:
        t0 = time.perf_counter()
        evaluation = evaluate(cfg, tuned, scorer_factory=scorer_factory, progress=progress)
        timings["eval_s"] = time.perf_counter() - t0
        for done, evaluated in zip(
            rounds, tuned, strict=True
        ):  # a round's policy card gets the same win rates
            if done.policy_dir is not None:
                card = card_evaluation(cfg, evaluated.name, evaluation.frame)
                write_model_card(done.policy_dir, done.train_dir, kind="pipeline", evaluation=card)
    return JobOutputs(rounds=rounds, eval=evaluation, tuned=tuned, seconds=timings)
