"""A run directory read into plain data for the page: what each stage wrote, statistics over every row.

Each `collect_*` function reads one stage's tables and manifests through `RunPaths` and returns a dataclass, or
None when the stage has not run (the page then says so). Statistics (score distributions, vote margins, overruled
metrics, win rates) use every row; what the page shows row by row is a bounded sample (`pipeline.reporting.sampling`),
and the sample's image ids are fetched afterwards in one scan per table (`pipeline.reporting.images`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.paths import RunPaths, table_files
from pipeline.reporting.sampling import (
    ReportLimits,
    candidates_to_show,
    downsample_curve,
    ranks_descending,
    sample_indices,
    sample_keys,
)
from pipeline.schema import SCORE_PREFIX, VOTE_PREFIX, metric_columns

HISTOGRAM_BINS = 30


def read_json(path: Path) -> dict[str, Any] | None:
    """A manifest or diagnostics file, or None when it is not there; an unreadable one is an error naming it."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else None


# -- the stage directories of a run -------------------------------------------------------------------------------
def stage_dirs(root: Path) -> list[tuple[str, RunPaths]]:
    """(label, paths) of every directory holding a stage-1 → train chain: the run itself, or each online round."""
    paths = RunPaths(root)
    rounds = sorted(
        (int(m.group(1)), p)
        for p in root.glob("round_*")
        if p.is_dir() and (m := re.fullmatch(r"round_(\d+)", p.name))
    )
    if paths.candidates.is_dir() or not rounds:
        return [("", paths)]
    return [(f"round {r}", paths.round(r)) for r, _ in rounds]


def strategy_dirs(parent: Path) -> list[str]:
    """Names of the finished strategy directories under `pairs/` or `train/` (those with a manifest)."""
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if (p / "manifest.json").is_file())


# -- run ------------------------------------------------------------------------------------------------------------
@dataclass
class RunInfo:
    root: Path
    config: dict[str, Any] | None
    packages: dict[str, str]
    seconds: dict[str, float]  # stage → wall seconds, from the manifests
    counts: dict[str, int]
    created: str | None


def collect_run(root: Path) -> RunInfo:
    """Config, package versions, seconds and counts per stage, from the manifests.

    The configuration shown is the evaluation's (the job's own, with the original base model), else the first
    training's, else stage 1's: with online rounds, later rounds' configurations name the previous policy.
    """
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    config: dict[str, Any] | None = None
    train_config: dict[str, Any] | None = None
    packages: dict[str, str] = {}
    created = None
    for label, paths in stage_dirs(root):
        prefix = f"{label}: " if label else ""
        cand = read_json(paths.candidates / "manifest.json")
        if cand:
            config = config or cand.get("config")
            packages = packages or cand.get("packages", {})
            created = created or cand.get("created")
            calls = cand.get("calls", [])
            seconds[prefix + "stage 1"] = sum(float(c.get("wall_seconds") or 0.0) for c in calls)
            counts[prefix + "candidates"] = int(cand.get("n_rows", 0))
            counts[prefix + "quarantined"] = int(cand.get("n_errors", 0))
        for strategy in strategy_dirs(paths.root / "pairs"):
            vote = read_json(paths.pairs(strategy) / "manifest.json") or {}
            seconds[f"{prefix}vote ({strategy})"] = float(vote.get("timings", {}).get("total_s", 0.0))
            counts[f"{prefix}pairs kept ({strategy})"] = int(vote.get("counts", {}).get("pairs_kept", 0))
        for strategy in strategy_dirs(paths.root / "train"):
            tm = read_json(paths.train(strategy) / "manifest.json") or {}
            timings = tm.get("timings", {})
            seconds[f"{prefix}train ({strategy})"] = float(timings.get("prepare_s", 0.0)) + float(
                timings.get("train_s", 0.0)
            )
            counts[f"{prefix}training steps ({strategy})"] = int(tm.get("step", 0))
            train_config = train_config or tm.get("config")
    ev = read_json(RunPaths(root).eval / "manifest.json")
    if ev:
        seconds["evaluation"] = float(ev.get("wall_seconds", 0.0))
        counts["evaluation items"] = sum(int(n) for n in ev.get("n_items", {}).values())
        packages = packages or ev.get("packages", {})
    config = (ev or {}).get("config") or train_config or config
    return RunInfo(root, config, packages, seconds, counts, created)


# -- candidates -----------------------------------------------------------------------------------------------------
@dataclass
class CandidateView:
    image_id: str
    seed: int
    model: str
    scores: dict[str, float]
    ranks: dict[str, int]
    best: list[str]  # metrics for which this is the prompt's best image
    worst: list[str]


@dataclass
class PromptView:
    prompt_id: str
    prompt: str
    n_candidates: int
    candidates: list[CandidateView]


@dataclass
class CandidatesData:
    directory: Path
    metrics: list[str]
    n_rows: int
    n_errors: int
    n_prompts: int
    per_prompt: tuple[int, int]  # fewest and most candidates of a prompt
    stats: dict[str, dict[str, float]]
    histograms: dict[str, tuple[list[float], list[int]]]  # metric → (bin edges, counts)
    prompts: list[PromptView]

    def image_ids(self) -> set[str]:
        return {c.image_id for p in self.prompts for c in p.candidates}


def _histogram(values: np.ndarray) -> tuple[list[float], list[int]]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [], []
    counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS)
    return edges.tolist(), counts.tolist()


def collect_candidates(paths: RunPaths, limits: ReportLimits) -> CandidatesData | None:
    """Score statistics over every candidate; a sample of prompts with their candidates, best/worst marked."""
    files = table_files(paths.candidates)
    if not files:
        return None
    scan = pl.scan_parquet(files)
    metrics = metric_columns(scan.collect_schema().names())
    score_cols = [SCORE_PREFIX + m for m in metrics]
    table = scan.select("prompt_id", *score_cols).collect()
    stats, histograms = {}, {}
    for m, col in zip(metrics, score_cols, strict=True):
        values = table[col].cast(pl.Float64).to_numpy()
        stats[m] = {
            "mean": float(np.nanmean(values)) if values.size else math.nan,
            "std": float(np.nanstd(values, ddof=1)) if values.size > 1 else math.nan,
            "min": float(np.nanmin(values)) if values.size else math.nan,
            "max": float(np.nanmax(values)) if values.size else math.nan,
        }
        histograms[m] = _histogram(values)
    sizes = (
        table.group_by("prompt_id").len().sort("prompt_id")
    )  # sorted here, sample_keys' sort is then linear
    chosen = sample_keys(sizes["prompt_id"].to_list(), limits.prompts, limits.seed)
    rows = (
        scan.filter(pl.col("prompt_id").is_in(chosen))
        .select("image_id", "prompt_id", "prompt", "seed", "model", *score_cols)
        .collect()
        .sort("prompt_id", "seed", "image_id")
    )
    prompts = [
        _prompt_view(group, metrics, limits) for _, group in rows.group_by("prompt_id", maintain_order=True)
    ]
    n_errors = sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in table_files(paths.errors))
    return CandidatesData(
        directory=paths.candidates,
        metrics=metrics,
        n_rows=table.height,
        n_errors=int(n_errors),
        n_prompts=sizes.height,
        per_prompt=(int(sizes["len"].to_numpy().min()), int(sizes["len"].to_numpy().max())),
        stats=stats,
        histograms=histograms,
        prompts=prompts,
    )


def _prompt_view(group: pl.DataFrame, metrics: list[str], limits: ReportLimits) -> PromptView:
    scores = group.select([SCORE_PREFIX + m for m in metrics]).cast(pl.Float64).to_numpy()
    ranks = ranks_descending(scores)
    best = {m: int(np.argmax(scores[:, j])) for j, m in enumerate(metrics)}
    worst = {m: int(np.argmin(scores[:, j])) for j, m in enumerate(metrics)}
    shown = candidates_to_show(scores, limits.candidates_per_prompt)
    ids, seeds, models = group["image_id"].to_list(), group["seed"].to_list(), group["model"].to_list()
    views = [
        CandidateView(
            image_id=ids[i],
            seed=int(seeds[i]),
            model=str(models[i]),
            scores={m: float(scores[i, j]) for j, m in enumerate(metrics)},
            ranks={m: int(ranks[i, j]) for j, m in enumerate(metrics)},
            best=[m for m in metrics if best[m] == i],
            worst=[m for m in metrics if worst[m] == i and best[m] != i],
        )
        for i in shown.tolist()
    ]
    return PromptView(group["prompt_id"][0], group["prompt"][0], group.height, views)


# -- pairs ----------------------------------------------------------------------------------------------------------
@dataclass
class PairView:
    prompt: str
    image_id_w: str
    image_id_l: str
    votes: dict[str, int]  # metric → +1 (prefers the winner), −1, 0
    votes_w: int
    votes_l: int
    confidence: float


@dataclass
class PairsData:
    strategy: str
    directory: Path
    metrics: list[str]
    manifest: dict[str, Any]
    n_pairs: int
    margins: list[tuple[int, int, int]]  # (votes for the winner, votes against, kept pairs), every kept pair
    overruled: dict[str, dict[str, float]]  # metric → share of kept pairs it voted against / called a tie
    agreement_kept: (
        np.ndarray | None
    )  # sign agreement over every kept pair, when the vote wrote no diagnostics
    diagnostics: dict[str, Any] | None  # the vote's own diagnostics.json (its scope is stated inside)
    keep_rates: list[dict[str, Any]]  # every strategy voted in this run: kept / formed, exact
    pairs: list[PairView]

    def image_ids(self) -> set[str]:
        return {i for p in self.pairs for i in (p.image_id_w, p.image_id_l)}


def sign_agreement(votes: np.ndarray) -> np.ndarray:
    """Share of rows on which two columns of a (pairs, metrics) vote matrix agree; NaN without rows."""
    m = votes.shape[1]
    out = np.full((m, m), math.nan)
    if votes.shape[0]:
        for i in range(m):
            for j in range(i, m):
                out[i, j] = out[j, i] = float((votes[:, i] == votes[:, j]).mean())
    return out


def pairs_strategy(paths: RunPaths, config: dict[str, Any] | None) -> str | None:
    """The strategy the page shows pairs of: the trained one, else the configured vote, else the first on disk."""
    on_disk = strategy_dirs(paths.root / "pairs")
    if not on_disk:
        return None
    trained = strategy_dirs(paths.root / "train")
    for name in (*trained, (config or {}).get("vote", {}).get("strategy", "")):
        if name and RunPaths(paths.root).pairs(name).name in on_disk:
            return RunPaths(paths.root).pairs(name).name
    return on_disk[0]


def collect_pairs(paths: RunPaths, strategy: str, limits: ReportLimits) -> PairsData | None:
    """Margins, overruled metrics and agreement over every kept pair; a seeded sample of pairs to show."""
    directory = paths.pairs(strategy)
    manifest = read_json(directory / "manifest.json")
    files = table_files(directory)
    if manifest is None or not files:
        return None
    scan = pl.scan_parquet(files)
    metrics = metric_columns(scan.collect_schema().names(), VOTE_PREFIX)
    vote_cols = [VOTE_PREFIX + m for m in metrics]
    votes = scan.select(*vote_cols, "votes_w", "votes_l").collect()
    n = votes.height
    margins = (
        votes.group_by("votes_w", "votes_l").len().sort("votes_w", "votes_l", descending=[True, False]).rows()
        if n
        else []
    )
    overruled = {
        m: {
            "against": float((votes[c].to_numpy() == -1).mean()) if n else math.nan,
            "tied": float((votes[c].to_numpy() == 0).mean()) if n else math.nan,
        }
        for m, c in zip(metrics, vote_cols, strict=True)
    }
    diagnostics = read_json(directory / "diagnostics" / "diagnostics.json")
    if diagnostics is not None and diagnostics.get("metrics") != metrics:
        diagnostics = None  # written for other metrics: not this table's
    agreement = None if diagnostics is not None else sign_agreement(votes.select(vote_cols).to_numpy())
    # One one-row slice per shown pair: the reader skips to it, where a row-number filter decodes every
    # pair's strings (0.2 s against 1.6 s for 24 of 3.5M pairs, measured on the benchmark's table).
    columns = ["prompt", "image_id_w", "image_id_l", *vote_cols, "votes_w", "votes_l", "confidence"]
    shown_rows = sample_indices(n, limits.pairs, limits.seed)
    slices = [scan.slice(int(i), 1).select(columns) for i in shown_rows]
    sample = pl.concat(slices).collect().sort("prompt", "image_id_w") if slices else pl.DataFrame()
    views = [
        PairView(
            prompt=r["prompt"],
            image_id_w=r["image_id_w"],
            image_id_l=r["image_id_l"],
            votes={m: int(r[VOTE_PREFIX + m]) for m in metrics},
            votes_w=int(r["votes_w"]),
            votes_l=int(r["votes_l"]),
            confidence=float(r["confidence"]),
        )
        for r in sample.iter_rows(named=True)
    ]
    keep_rates = []
    for name in strategy_dirs(paths.root / "pairs"):
        counts = (read_json(paths.pairs(name) / "manifest.json") or {}).get("counts", {})
        keep_rates.append(
            {"strategy": name, "kept": counts.get("pairs_kept"), "formed": counts.get("pairs_formed"),
             "dropped": counts.get("pairs_dropped", {})}
        )  # fmt: skip
    return PairsData(
        strategy=strategy,
        directory=directory,
        metrics=metrics,
        manifest=manifest,
        n_pairs=n,
        margins=[(int(w), int(lo), int(c)) for w, lo, c in margins],
        overruled=overruled,
        agreement_kept=agreement,
        diagnostics=diagnostics,
        keep_rates=keep_rates,
        pairs=views,
    )


# -- training -------------------------------------------------------------------------------------------------------
@dataclass
class TrainingData:
    strategy: str
    directory: Path
    manifest: dict[str, Any]
    curves: dict[str, tuple[list[float], list[float]]]  # metric → (steps, values), at most curve_points each
    curve_source: str | None  # "metrics.jsonl", "tensorboard" or None (no logs)
    total_points: int
    refreshes: list[int]
    card: Path | None
    final: Path | None


def read_curves(logs_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], str | None]:
    """The trainer's logged metrics: `logs/metrics.jsonl`, else the tensorboard event files, else nothing."""
    from trainer.metrics_log import METRICS_FILE, read_metrics

    jsonl = logs_dir / METRICS_FILE
    if jsonl.is_file():
        return read_metrics(jsonl), METRICS_FILE
    events = sorted(logs_dir.rglob("events.out.tfevents.*")) if logs_dir.is_dir() else []
    if not events:
        return {}, None
    return read_tensorboard(events), "tensorboard"


def read_tensorboard(event_files: list[Path]) -> dict[str, list[tuple[int, float]]]:
    """`train/<metric>` scalars from tensorboard event files (runs trained before `metrics.jsonl` existed)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, dict[int, float]] = {}
    for directory in sorted({f.parent for f in event_files}):
        acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if not tag.startswith("train/"):
                continue
            points = curves.setdefault(tag[len("train/") :], {})
            for event in acc.Scalars(tag):
                points[int(event.step)] = float(event.value)  # a resumed run's repeated step: the last wins
    return {name: sorted(points.items()) for name, points in curves.items()}


def collect_training(paths: RunPaths, strategy: str, limits: ReportLimits) -> TrainingData | None:
    directory = paths.train(strategy)
    manifest = read_json(directory / "manifest.json")
    if manifest is None:
        return None
    raw, source = read_curves(directory / "logs")
    curves = {}
    for name, points in raw.items():
        steps, values = zip(*points, strict=True) if points else ((), ())
        xs, ys = downsample_curve(steps, values, limits.curve_points)
        curves[name] = (xs.tolist(), ys.tolist())
    final = directory / "final"
    from pipeline.reporting.model_card import CARD_FILE

    return TrainingData(
        strategy=strategy,
        directory=directory,
        manifest=manifest,
        curves=curves,
        curve_source=source,
        total_points=max((len(p) for p in raw.values()), default=0),
        refreshes=[int(s) for s in manifest.get("reference_refreshes", [])],
        card=final / CARD_FILE if (final / CARD_FILE).is_file() else None,
        final=final if final.is_dir() else None,
    )


# -- evaluation -----------------------------------------------------------------------------------------------------
@dataclass
class EvalItem:
    prompt: str
    prompt_id: str
    seed: int
    images: list[tuple[str, str]]  # (label, image id): the base, then each run's tuned (and any other) image
    wins: dict[str, dict[str, float]]  # run → metric (or majority) → 1, 0, ½


@dataclass
class EvalData:
    directory: Path
    manifest: dict[str, Any]
    winrates: pl.DataFrame  # every row and column of winrates.parquet
    runs: list[str]
    win_columns: list[str]  # per_image columns `win_<metric>`, in order
    n_items: int
    baseline: str = "base"  # the evaluation's baseline: the base model, or another run head to head
    items: list[EvalItem] = field(default_factory=list)

    def image_ids(self) -> set[str]:
        return {i for item in self.items for _, i in item.images}


def collect_eval(root: Path, limits: ReportLimits) -> EvalData | None:
    """Every win-rate row; a seeded sample of (prompt, seed) items with every model's image side by side."""
    eval_dir = RunPaths(root).eval
    manifest = read_json(eval_dir / "manifest.json")
    rates_path, per_image_path = eval_dir / "winrates.parquet", eval_dir / "per_image.parquet"
    if manifest is None or not rates_path.is_file():
        return None
    winrates = pl.read_parquet(rates_path)
    runs = list(dict.fromkeys(winrates["run"].to_list())) if "run" in winrates.columns else []
    baseline = baseline_name(manifest)
    if not per_image_path.is_file():
        return EvalData(eval_dir, manifest, winrates, runs, [], 0, baseline)
    per_image = pl.read_parquet(per_image_path)
    if not {"prompt_id", "seed", "prompt"} <= set(per_image.columns):  # items need their key and their prompt
        return EvalData(eval_dir, manifest, winrates, runs, [], 0, baseline)
    keys = per_image.select("prompt_id", "seed").unique().sort("prompt_id", "seed")
    chosen = keys[sample_indices(keys.height, limits.eval_items, limits.seed).tolist()]
    rows = per_image.join(chosen, on=["prompt_id", "seed"], how="semi").sort("prompt_id", "seed")
    # The baseline's image first, then each model's; `image_id_model` is labelled with its run.
    image_cols = sorted(
        (c for c in per_image.columns if c.startswith("image_id_")), key=lambda c: c != "image_id_baseline"
    )
    win_cols = [c for c in per_image.columns if c.startswith("win_")]
    items = []
    for (prompt_id, _), group in rows.group_by("prompt_id", "seed", maintain_order=True):
        images: list[tuple[str, str]] = []
        seen: set[str] = set()
        wins: dict[str, dict[str, float]] = {}
        for r in group.iter_rows(named=True):
            run = str(r.get("run", ""))
            for col in image_cols:
                image_id = r[col]
                if image_id is None or image_id in seen:
                    continue
                seen.add(image_id)
                side = col[len("image_id_") :]
                images.append(
                    (run if side == "model" else baseline if side == "baseline" else side, image_id)
                )
            wins[run] = {c[len("win_") :]: float(r[c]) for c in win_cols if r[c] is not None}
        items.append(EvalItem(str(group["prompt"][0]), str(prompt_id), int(group["seed"][0]), images, wins))
    return EvalData(eval_dir, manifest, winrates, runs, win_cols, keys.height, baseline, items)


def baseline_name(manifest: dict[str, Any]) -> str:
    """What the evaluation compared against: `baseline.name` in its manifest (`base` for the base model)."""
    baseline = manifest.get("baseline")
    return str(baseline.get("name", "base")) if isinstance(baseline, dict) else "base"
