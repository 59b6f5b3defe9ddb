"""The page itself: the collected data as one HTML document with inline CSS, inline SVG and a few lines of script.

No external assets (no CDN, no fonts, no template engine): the page opens offline from the file system, with its
images as files beside it. Every text that comes from a run (prompts, names, config values) is escaped. Each part
of the page is one function returning HTML; `render_page` puts them in order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import yaml

from pipeline.reporting.charts import histogram_chart, line_chart, winrate_chart
from pipeline.reporting.collect import (
    CandidatesData,
    CandidateView,
    EvalData,
    PairsData,
    RunInfo,
    TrainingData,
)
from pipeline.reporting.sampling import ReportLimits, shown_note

SECTIONS = ("run", "candidates", "pairs", "training", "evaluation")
TRAINING_CHARTS = (  # (title, metrics drawn together)
    ("loss", ("loss",)),
    ("implicit accuracy", ("implicit_acc",)),
    ("reward margin", ("reward_margin",)),
    ("winner_worse: share of pairs", ("winner_worse",)),
    ("winner MSE: policy vs reference", ("policy_mse_w", "ref_mse_w")),
    ("learning rate", ("lr",)),
)


@dataclass
class StageView:
    """One stage-1 → train chain of the run (the run itself, or one online round) as collected."""

    label: str
    candidates: CandidatesData | None
    pairs: PairsData | None
    training: list[TrainingData]


def fmt(x: Any, digits: int = 3) -> str:
    """Numbers for people: 3 decimals, thousands separators for integers, – for missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 10**-digits):
            return f"{x:.{digits}g}"
        return f"{x:.{digits}f}"
    return escape(str(x))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    """An HTML table; cells are formatted with `fmt` unless they are already markup (`Markup`).

    A header of empty strings (a key–value table) is left out."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    if not any(header):
        body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f'<table class="{cls}"><tbody>{body}</tbody></table>'
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class Markup(str):
    """A string that is already HTML (not escaped again by `table`)."""


def _cell(c: Any) -> str:
    return str(c) if isinstance(c, Markup) else fmt(c)


def missing(text: str) -> str:
    return f'<p class="missing">{text}</p>'


def img(src: str | None, alt: str, cls: str = "") -> str:
    if src is None:
        return f'<div class="noimg {cls}">image unreadable</div>'
    return f'<img src="{escape(src)}" alt="{escape(alt)}" class="{cls}">'


# -- run ------------------------------------------------------------------------------------------------------------
def _seeds_text(scheme: object) -> str:
    """How a run's seeds were drawn; configs written before `seed_scheme` existed shared them across prompts."""
    return "the same seeds for every prompt" if scheme in (None, "shared") else "each prompt its own noise"


def _get(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _prompt_source(section: dict[str, Any] | None) -> str:
    if not section:
        return "–"
    source = section.get("manifest") or section.get("path") or section.get("pairs") or "–"
    return f"{source}" + (f" (first {section['limit']})" if section.get("limit") else "")


def protocol(config: dict[str, Any]) -> list[str]:
    """The run's method in sentences, from its resolved configuration."""
    c = config
    metrics = [s.get("name") for s in _get(c, "scoring.scorers", [])]
    ref = _get(c, "train.ref_update", {}) or {}
    ref_text = {
        "none": "a static reference (the initial model)",
        "hard": f"a dynamic reference, the policy copied into it every {ref.get('every')} steps",
        "ema": f"a dynamic reference, an EMA of the policy (decay {ref.get('decay')}) every {ref.get('every')} steps",
    }.get(ref.get("mode", "none"), str(ref))
    lora = f"LoRA rank {_get(c, 'train.lora_rank')}" if _get(c, "train.use_lora") else "a full UNet fine-tune"
    min_agree = _get(c, "vote.min_agree") or "a strict majority of"
    lines = [
        f"Stage 1: every prompt of {_prompt_source(_get(c, 'prompts'))} gets "
        f"{_get(c, 'generation.num_candidates')} candidate images from {_get(c, 'model.pretrained')} "
        f"({_get(c, 'generation.width')}×{_get(c, 'generation.height')}, {_get(c, 'generation.num_inference_steps')} "
        f"steps, guidance {_get(c, 'generation.guidance_scale')}, seed indices from "
        f"{_get(c, 'generation.seed_offset')}, {_seeds_text(_get(c, 'generation.seed_scheme'))}), "
        f"each scored by {len(metrics)} metrics: {', '.join(map(str, metrics))}.",
        f"Vote: {_get(c, 'vote.pairing')} pairs inside each prompt; every metric votes for the image it scores "
        f"higher; the {_get(c, 'vote.strategy')} strategy picks the winner (majority: kept when {min_agree} "
        f"metrics agree).",
        f"Training: Diffusion-DPO ({_get(c, 'train.loss_type')} loss, β {_get(c, 'train.beta')}) on the "
        f"{_get(c, 'train.strategy')} pairs, {lora}, {_get(c, 'train.max_steps')} steps of "
        f"{_get(c, 'train.batch_size')} pairs, learning rate {_get(c, 'train.learning_rate')}, with {ref_text}.",
    ]
    if _get(c, "eval.prompts"):
        lines.append(
            f"Evaluation: held-out prompts of {_prompt_source(_get(c, 'eval.prompts'))}, "
            f"{_get(c, 'eval.seeds_per_prompt')} seeds each (indices from {_get(c, 'eval.seed_offset')}, "
            f"{_seeds_text(_get(c, 'eval.seed_scheme'))}); base and tuned images "
            f"of an item start from the same noise; win rates (ties ½) with "
            f"{float(_get(c, 'eval.confidence', 0.95)):.0%} bootstrap intervals over "
            f"{_get(c, 'eval.bootstrap_unit', 'item')}s "
            f"({_get(c, 'eval.bootstrap_samples')} resamples)."
        )
    return lines


def run_section(run: RunInfo) -> str:
    parts = ['<section id="run" data-section="run"><h2>Run</h2>']
    c = run.config
    if c is None:
        parts.append(missing("No stage has written a manifest here yet: nothing to describe."))
        return "".join(parts) + "</section>"
    metrics = [s.get("name") for s in _get(c, "scoring.scorers", [])]
    summary = [
        ("run directory", str(run.root)),
        ("created", run.created or "–"),
        ("model", _get(c, "model.pretrained")),
        ("prompt set", _prompt_source(_get(c, "prompts"))),
        ("candidates per prompt", _get(c, "generation.num_candidates")),
        ("metrics", ", ".join(map(str, metrics))),
        ("vote", f"{_get(c, 'vote.strategy')} ({_get(c, 'vote.pairing')} pairs)"),
        ("training", f"{_get(c, 'train.strategy')}, β {_get(c, 'train.beta')}, {_get(c, 'train.max_steps')} steps, "
         f"reference {_get(c, 'train.ref_update.mode')}"),
        ("online rounds", _get(c, "run.rounds", 1)),
        ("held-out prompts", _prompt_source(_get(c, "eval.prompts"))),
    ]  # fmt: skip
    parts.append('<div class="cols">')
    parts.append("<div><h3>Summary</h3>" + table(["", ""], summary, "kv") + "</div>")
    parts.append(
        "<div><h3>Counts</h3>" + table(["", ""], run.counts.items(), "kv")
        + "<h3>Seconds per stage</h3>" + table(["stage", "seconds"], [(k, Markup(f"{v:.1f}")) for k, v in run.seconds.items()], "kv")
        + "</div>"
    )  # fmt: skip
    parts.append(
        "<div><h3>Package versions</h3>"
        + table(["package", "version"], run.packages.items(), "kv")
        + "</div>"
    )
    parts.append(
        "</div><h3>Protocol</h3><ol>" + "".join(f"<li>{escape(s)}</li>" for s in protocol(c)) + "</ol>"
    )
    config_yaml = yaml.safe_dump(c, sort_keys=False, allow_unicode=True)
    parts.append(
        f"<details><summary>The whole configuration</summary><pre>{escape(config_yaml)}</pre></details>"
    )
    return "".join(parts) + "</section>"


# -- candidates -----------------------------------------------------------------------------------------------------
def candidates_part(data: CandidatesData, images: dict[str, str | None], limits: ReportLimits) -> str:
    parts = [
        f"<p>{data.n_rows:,} candidate images of {data.n_prompts:,} prompts ({data.per_prompt[0]}–"
        f"{data.per_prompt[1]} per prompt), {data.n_errors:,} quarantined by a scorer. Statistics use every row; "
        f"shown: {shown_note(len(data.prompts), data.n_prompts, 'prompts')}, at most "
        f"{limits.candidates_per_prompt} candidates each (every metric's best and worst among them). "
        "Rank 1 is a metric's best image of the prompt; ▲ marks it, ▼ the worst.</p>",
        table(
            ["metric", "mean", "std", "min", "max"],
            [(m, s["mean"], s["std"], s["min"], s["max"]) for m, s in data.stats.items()],
        ),
        '<div class="hists">'
        + "".join(histogram_chart(*data.histograms[m], title=f"{m} (all rows)") for m in data.metrics)
        + "</div>",
    ]
    for prompt in data.prompts:
        parts.append(
            f'<div class="prompt"><h4>“{escape(prompt.prompt)}” <span class="small">{prompt.n_candidates} '
            f"candidates{'' if len(prompt.candidates) == prompt.n_candidates else f', {len(prompt.candidates)} shown'}"
            '</span></h4><div class="grid">'
        )
        for cand in prompt.candidates:
            rows = "".join(
                f"<tr><td>{escape(m)}</td><td>{fmt(cand.scores[m])}</td>{_rank_cell(m, cand)}</tr>"
                for m in data.metrics
            )
            cls = "card" + (" isbest" if cand.best else "") + (" isworst" if cand.worst else "")
            parts.append(
                f'<figure class="{cls}">{img(images.get(cand.image_id), f"seed {cand.seed}")}'
                f'<figcaption>seed {cand.seed}<table class="scores">{rows}</table></figcaption></figure>'
            )
        parts.append("</div></div>")
    return "".join(parts)


def _rank_cell(metric: str, cand: CandidateView) -> str:
    if metric in cand.best:
        return f'<td class="best">#{cand.ranks[metric]}▲</td>'
    if metric in cand.worst:
        return f'<td class="worst">#{cand.ranks[metric]}▼</td>'
    return f"<td>#{cand.ranks[metric]}</td>"


# -- pairs ----------------------------------------------------------------------------------------------------------
def _vote_mark(v: int) -> Markup:
    return Markup({1: '<span class="w">✓</span>', -1: '<span class="l">✗</span>'}.get(v, "="))


def _matrix(
    metrics: list[str], values: Sequence[Sequence[float]], lower: Sequence[Sequence[float]] | None
) -> str:
    """A metrics × metrics table, cells shaded by value (upper triangle `values`, lower `lower` when given)."""
    rows = []
    for i, m in enumerate(metrics):
        cells = []
        for j in range(len(metrics)):
            v = values[i][j] if lower is None or j >= i else lower[i][j]
            shade = (
                ""
                if v is None or not math.isfinite(v)
                else f' style="background: rgba(31,119,180,{max(v, 0):.2f})"'
            )
            cells.append(f"<td{shade}>{fmt(v, 2)}</td>")
        rows.append(f"<tr><th>{escape(m)}</th>{''.join(cells)}</tr>")
    head = "".join(f"<th>{escape(m)}</th>" for m in metrics)
    return (
        f'<table class="matrix"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def pairs_part(data: PairsData, images: dict[str, str | None], limits: ReportLimits) -> str:
    counts = data.manifest.get("counts", {})
    dropped = ", ".join(f"{k} {v:,}" for k, v in (counts.get("pairs_dropped") or {}).items()) or "none"
    parts = [
        f"<p>Strategy <b>{escape(data.strategy)}</b> (min_agree {fmt(data.manifest.get('min_agree'))}, "
        f"pairing {escape(str(data.manifest.get('pairing')))}): {fmt(counts.get('pairs_kept'))} pairs kept of "
        f"{fmt(counts.get('pairs_formed'))} formed over {fmt(counts.get('prompts'))} prompts; dropped: "
        f"{escape(dropped)}. Margins, overruled metrics and agreement below use every kept pair; shown: "
        f"{shown_note(len(data.pairs), data.n_pairs, 'pairs')}.</p>",
        '<div class="cols">',
        "<div><h4>Keep rate per strategy (every pair, from each vote's manifest)</h4>"
        + table(
            ["strategy", "kept", "formed", "kept share"],
            [
                (r["strategy"], r["kept"], r["formed"], (r["kept"] / r["formed"]) if r["formed"] else None)
                for r in data.keep_rates
            ],
        )
        + "</div>",
        "<div><h4>Vote margins of the kept pairs</h4>"
        + table(
            ["votes for winner", "against", "pairs", "share"],
            [(w, lo, n, n / data.n_pairs if data.n_pairs else None) for w, lo, n in data.margins],
        )
        + "</div>",
        "<div><h4>How often each metric is overruled</h4>"
        + table(
            ["metric", "voted for the loser", "tie"],
            [(m, o["against"], o["tied"]) for m, o in data.overruled.items()],
        )
        + '<p class="small">Share of the kept pairs where the metric preferred the image that lost the vote.</p></div>',
        "</div>",
    ]
    diag = data.diagnostics
    if diag is not None:
        scope = (
            f"a sample of {diag.get('sample_prompts', 0):,} of {diag.get('total_prompts', 0):,} prompts"
            if diag.get("sampled")
            else f"all {diag.get('total_prompts', 0):,} prompts"
        )
        parts.append(
            f'<div class="cols"><div><h4>Metric agreement over every formed pair of {scope} '
            f"({diag.get('sample_pairs', 0):,} pairs, from the vote's diagnostics)</h4>"
            "<p class='small'>Upper triangle: share of pairs with the same vote; lower: Kendall tau-b.</p>"
            + _matrix(data.metrics, diag["agreement"], diag.get("kendall_tau_b"))
            + "</div><div><h4>Strategies on the same pairs (vote diagnostics)</h4>"
            + table(
                ["strategy", "kept share", "agrees with majority"],
                [
                    (r["strategy"], r["kept_share"], r["agrees_with_majority"])
                    for r in diag.get("strategies", [])
                ],
            )
            + "</div></div>"
        )
    elif data.agreement_kept is not None:
        parts.append(
            "<h4>Metric agreement over the kept pairs</h4><p class='small'>Share of kept pairs with the same vote "
            "(the vote wrote no diagnostics; kept pairs over-state agreement).</p>"
            + _matrix(data.metrics, data.agreement_kept.tolist(), None)
        )
    parts.append(
        "<h4>Pairs: winner beside loser</h4><p class='small'>✓ the metric prefers the winner, ✗ the loser, "
        "= a tie.</p><div class='boxes'>"
    )
    for pair in data.pairs:
        votes = table(["", ""], [(m, _vote_mark(v)) for m, v in pair.votes.items()], "votes")
        parts.append(
            f'<div class="pair"><p class="ptext">“{escape(pair.prompt)}”</p><div class="pairrow">'
            f"<figure>{img(images.get(pair.image_id_w), 'winner', 'win')}<figcaption>winner</figcaption></figure>"
            f"<figure>{img(images.get(pair.image_id_l), 'loser', 'lose')}<figcaption>loser</figcaption></figure>"
            f'<div>{votes}<p class="small">margin {pair.votes_w}–{pair.votes_l}, confidence '
            f"{fmt(pair.confidence, 2)}</p></div></div></div>"
        )
    return "".join(parts) + "</div>"


# -- training -------------------------------------------------------------------------------------------------------
def training_part(data: TrainingData, limits: ReportLimits, report_to_run: str) -> str:
    m = data.manifest
    timings = m.get("timings", {})
    facts = [
        ("status", m.get("status")),
        ("optimizer steps", m.get("step")),
        ("pairs", m.get("num_pairs")),
        ("global batch", m.get("global_batch")),
        ("reference refreshes", ", ".join(map(str, data.refreshes)) or "none"),
        ("seconds (prepare + train)", (timings.get("prepare_s") or 0.0) + (timings.get("train_s") or 0.0)),
        ("steps per second", timings.get("steps_per_s")),
    ]
    if data.final is not None:
        facts.append(("final weights", str(data.final)))
    if data.card is not None:
        rel = f"{report_to_run}/{data.card.relative_to(data.directory.parent.parent).as_posix()}"
        facts.append(("model card", Markup(f'<a href="{escape(rel)}">{escape(rel)}</a>')))
    parts = [f"<h3>{escape(data.strategy)}</h3>", '<div class="cols"><div>', table(["", ""], facts, "kv")]
    before, after = m.get("eval_before") or {}, m.get("eval_after") or {}
    if before or after:
        keys = [
            k for k in ("implicit_acc", "reward_margin", "loss", "winner_worse") if k in before or k in after
        ]
        parts.append(
            "<h4>Held pairs with fixed noise</h4>"
            + table(
                ["", *keys],
                [("before", *[before.get(k) for k in keys]), ("after", *[after.get(k) for k in keys])],
            )
        )
    parts.append("</div></div>")
    if not data.curves:
        parts.append(
            missing("No training curves: the run wrote neither logs/metrics.jsonl nor tensorboard events.")
        )
        return "".join(parts)
    note = shown_note(min(data.total_points, limits.curve_points), data.total_points, "logged points")
    parts.append(
        f'<p class="small">Curves from {escape(str(data.curve_source))}: {note} (bucket means beyond '
        f"{limits.curve_points}). Dashed lines: reference refreshes.</p><div class='charts'>"
    )
    for title, names in TRAINING_CHARTS:
        series = {n: data.curves[n] for n in names if n in data.curves}
        if series:
            parts.append(line_chart(series, title, data.refreshes, "reference refresh"))
    return "".join(parts) + "</div>"


# -- evaluation -----------------------------------------------------------------------------------------------------
def eval_section(data: EvalData | None, images: dict[str, str | None], limits: ReportLimits) -> str:
    parts = ['<section id="evaluation" data-section="evaluation"><h2>Evaluation</h2>']
    if data is None:
        parts.append(missing("No evaluation yet: <code>python -m pipeline.evaluate --config …</code> writes "
                             "<code>eval/</code>, then rebuild this page."))  # fmt: skip
        return "".join(parts) + "</section>"
    w = data.winrates
    opponent = "the base" if data.baseline == "base" else data.baseline
    n_note = f"{data.n_items:,} held-out items" if data.n_items else "no per-item table"
    parts.append(
        f"<p>Win rate of each tuned model over {escape(opponent)} on {n_note} "
        "(the share of items where its image scores higher, ties ½), with bootstrap intervals. Every row of "
        "<code>winrates.parquet</code> is below; the chart draws those with an interval, plus each run's "
        f"<i>{LOWEST}</i> (its smallest per-metric win rate, with that metric's interval) when the table has no "
        "worst-metric row of its own.</p>"
    )
    if {"run", "metric", "win_rate", "ci_low", "ci_high"} <= set(w.columns):
        # One bar group per run, or per run and prompt set when the evaluation used several.
        several_sets = "prompt_set" in w.columns and w["prompt_set"].n_unique() > 1
        rows = [
            (
                f"{r['run']} · {r['prompt_set']}" if several_sets else str(r["run"]),
                str(r["metric"]),
                float(r["win_rate"]),
                float(r["ci_low"]),
                float(r["ci_high"]),
            )
            for r in w.iter_rows(named=True)
            if r["win_rate"] is not None and r["ci_low"] is not None and r["ci_high"] is not None
        ]
        lowest = lowest_metric_rows(rows, list(data.manifest.get("metrics", [])))
        notes = {(run, LOWEST): metric for run, metric, *_ in lowest}
        rows += [(run, LOWEST, rate, low, high) for run, _, rate, low, high in lowest]
        parts.append(winrate_chart(rows, f"win rate over {opponent}, with intervals", notes))
    parts.append(table(w.columns, w.rows()))
    if not data.items:
        return "".join(parts) + "</section>"
    runs = data.runs
    parts.append(
        f"<h3>Items</h3><p>Shown: {shown_note(len(data.items), data.n_items, 'items')}; every image of an item "
        "starts from the same noise. ✓ the tuned image wins the metric, ✗ it loses, ½ a tie.</p>"
        '<div class="controls"><label>prompt contains <input id="item-filter" type="search"></label> '
        '<label>sort by <select id="item-sort"><option value="prompt">prompt</option>'
        + "".join(f'<option value="{i}">majority win of {escape(r)}</option>' for i, r in enumerate(runs))
        + '</select></label> <span id="item-count"></span></div><div id="items" class="boxes">'
    )
    for item in data.items:
        majority = " ".join(
            f'data-win{i}="{item.wins.get(r, {}).get("majority", "")}"' for i, r in enumerate(runs)
        )
        cells = []
        for label, image_id in item.images:
            win = item.wins.get(label)
            marks = (
                table(["", ""], [(k, Markup(_win_mark(v))) for k, v in win.items()], "votes") if win else ""
            )
            cells.append(
                f'<figure class="side">{img(images.get(image_id), label)}<figcaption>{escape(label)}{marks}'
                "</figcaption></figure>"
            )
        parts.append(
            f'<div class="item" data-prompt="{escape(item.prompt.lower())}" {majority}>'
            f'<p class="ptext">“{escape(item.prompt)}” · seed {item.seed}</p><div class="pairrow">{"".join(cells)}</div></div>'
        )
    return "".join(parts) + "</div></section>"


LOWEST = "lowest metric"


def lowest_metric_rows(
    rows: Sequence[tuple[str, str, float, float, float]], metrics: Sequence[str]
) -> list[tuple[str, str, float, float, float]]:
    """Per run, its per-metric row with the smallest win rate; none for a run whose table has a worst-metric row."""
    out = []
    for run in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == run]
        if any("worst" in r[1] for r in mine):
            continue
        per_metric = [r for r in mine if r[1] in metrics]
        if per_metric:
            out.append(min(per_metric, key=lambda r: r[2]))
    return out


def _win_mark(v: float) -> str:
    return '<span class="w">✓</span>' if v == 1.0 else '<span class="l">✗</span>' if v == 0.0 else "½"


# -- the page -------------------------------------------------------------------------------------------------------
def stage_section(
    name: str, title: str, stages: list[StageView], body: Any, empty: str, multiple: bool
) -> str:
    parts = [f'<section id="{name}" data-section="{name}"><h2>{title}</h2>']
    for stage in stages:
        if multiple:
            parts.append(f"<h3>{escape(stage.label)}</h3>")
        content = body(stage)
        parts.append(content if content else missing(empty))
    return "".join(parts) + "</section>"


def render_page(
    run: RunInfo,
    stages: list[StageView],
    evaluation: EvalData | None,
    images: dict[str, str | None],
    limits: ReportLimits,
    footer: str,
) -> str:
    multiple = len(stages) > 1

    def cands(s: StageView) -> str:
        return candidates_part(s.candidates, images, limits) if s.candidates else ""

    def pairs(s: StageView) -> str:
        return pairs_part(s.pairs, images, limits) if s.pairs else ""

    def training(s: StageView) -> str:
        # report/index.html → the run directory (→ the round's directory with online rounds)
        base = ".." + (f"/{s.label.replace(' ', '_')}" if multiple else "")
        return "".join(training_part(t, limits, base) for t in s.training)

    title = f"balanced-dpo report · {run.root.name}"
    nav = " · ".join(f'<a href="#{s}">{s.capitalize()}</a>' for s in SECTIONS)
    body = [
        run_section(run),
        stage_section("candidates", "Candidates", stages, cands,
                      "No candidates yet: stage 1 (<code>python pipeline/score.py</code>) writes them.", multiple),
        stage_section("pairs", "Pairs", stages, pairs,
                      "No pairs yet: the vote (<code>python -m pipeline.vote</code>) writes them.", multiple),
        stage_section("training", "Training", stages, training,
                      "No training yet: <code>python trainer/train.py</code> writes <code>train/&lt;strategy&gt;/</code>.",
                      multiple),
        eval_section(evaluation, images, limits),
    ]  # fmt: skip
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><nav>{nav}</nav></header><main>{''.join(body)}</main>"
        f"<footer>{footer}</footer><script>{SCRIPT}</script></body></html>\n"
    )


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#24292f;color:#fff;padding:10px 20px;position:sticky;top:0;z-index:2}
header h1{font-size:18px;margin:0 0 4px}header a{color:#9cd0ff;margin-right:4px}
main{padding:0 12px 20px}section{background:#fff;border:1px solid #ddd;border-radius:6px;margin:14px 0;padding:4px 12px 14px}
h2{border-bottom:1px solid #eee;padding-bottom:4px}h4{margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0;font-size:13px}td,th{border:1px solid #e3e3e3;padding:2px 6px;text-align:left}
th{background:#f3f5f7}table.kv td:first-child{color:#555}table.scores,table.votes{font-size:11px;margin:2px 0}
table.scores td,table.votes td{padding:0 1px;border:none;white-space:nowrap}table.scores{width:100%;font-size:10px}
.cols{display:flex;flex-wrap:wrap;gap:24px}.small{color:#666;font-size:12px}
.missing{color:#8a6d3b;background:#fcf8e3;padding:8px;border-radius:4px}
.grid{display:flex;flex-wrap:wrap;gap:6px}.card{margin:0;border:2px solid #eee;border-radius:4px;padding:3px;width:134px;font-size:11px}
.card.isbest{border-color:#2ca02c}.card.isworst{border-color:#d62728}.card.isbest.isworst{border-color:#9467bd}
.card img{width:134px;height:auto;display:block}.pairrow img{width:112px;height:auto;display:block}
.best{color:#2ca02c;font-weight:600}.worst{color:#d62728;font-weight:600}
.boxes{display:flex;flex-wrap:wrap;gap:10px}.pair,.item{border:1px solid #e3e3e3;border-radius:4px;padding:6px;max-width:560px;font-size:12px}
.pairrow{display:flex;gap:10px;align-items:flex-start}figure.side{display:flex;gap:4px;align-items:flex-start}
figure.side figcaption{font-size:12px}
.pairrow figure{margin:0}img.win{outline:3px solid #2ca02c}img.lose{outline:3px solid #d62728}
.ptext{margin:2px 0;font-style:italic}.w{color:#2ca02c}.l{color:#d62728}
.hists,.charts{display:flex;flex-wrap:wrap;gap:10px}
svg.chart{background:#fff;border:1px solid #eee}svg .ct{font-size:12px;font-weight:600}svg .cl{font-size:10px;fill:#444}
svg .grid{stroke:#eee}svg .half{stroke:#999;stroke-dasharray:4 3}svg .marker{stroke:#9467bd;stroke-dasharray:3 3}
pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:400px}.matrix td{text-align:center;min-width:48px}
.controls{margin:8px 0}.noimg{width:128px;height:64px;background:#eee;color:#888;font-size:11px}
footer{color:#777;font-size:12px;padding:0 20px 20px}
"""

# Filter the evaluation items by prompt text and sort them; nothing else on the page needs a script.
SCRIPT = """
(function () {
  var box = document.getElementById('items');
  if (!box) { return; }
  var filter = document.getElementById('item-filter');
  var sort = document.getElementById('item-sort');
  var count = document.getElementById('item-count');
  var items = Array.prototype.slice.call(box.querySelectorAll('.item'));
  function update() {
    var text = filter.value.toLowerCase();
    var key = sort.value;
    var sorted = items.slice();
    if (key !== 'prompt') {
      sorted.sort(function (a, b) {
        return (parseFloat(b.getAttribute('data-win' + key)) || 0) - (parseFloat(a.getAttribute('data-win' + key)) || 0);
      });
    }
    var shown = 0;
    sorted.forEach(function (el) {
      var visible = el.getAttribute('data-prompt').indexOf(text) !== -1;
      el.style.display = visible ? '' : 'none';
      if (visible) { shown += 1; }
      box.appendChild(el);
    });
    count.textContent = shown + ' of ' + items.length + ' items';
  }
  filter.addEventListener('input', update);
  sort.addEventListener('change', update);
  update();
})();
"""
