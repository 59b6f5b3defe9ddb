"""Inline SVG charts for the page: line charts with markers, win rates with intervals, histograms.

Drawn as SVG text in Python, so the page needs no plotting library, no script and no network to show them; each
function returns one `<svg>` element. The axis arithmetic (`nice_ticks`, `scale`) is pure and tested.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high] (steps of 1, 2 or 5 × 10^k)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks, t = [], first
    while t <= high + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def scale(value: float, domain: tuple[float, float], pixels: tuple[float, float]) -> float:
    """`value` mapped linearly from `domain` to `pixels` (a degenerate domain maps to the middle)."""
    d0, d1 = domain
    p0, p1 = pixels
    if d1 == d0:
        return (p0 + p1) / 2
    return p0 + (value - d0) * (p1 - p0) / (d1 - d0)


def _label(x: float) -> str:
    return "0" if x == 0 else f"{x:.3g}"


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    markers: Sequence[float] = (),
    marker_label: str = "",
    width: int = 380,
    height: int = 220,
) -> str:
    """One or more curves over a shared x axis, with dashed vertical lines at `markers` (reference refreshes)."""
    left, right, bottom = 56, 12, 34
    top = 40 if len(series) > 1 else 26  # room for the legend under the title
    xs = [x for s in series.values() for x in s[0]]
    ys = [y for s in series.values() for y in s[1] if math.isfinite(y)]
    body = [f'<text x="{left}" y="16" class="ct">{escape(title)}</text>']
    if not xs or not ys:
        body.append(f'<text x="{left}" y="{height / 2}" class="cl">no points logged</text>')
        return _svg(width, height, body, title)
    xdom = (min(xs), max(xs))
    yticks = nice_ticks(min(ys), max(ys), 4)
    ydom = (min(yticks[0], min(ys)), max(yticks[-1], max(ys)))
    px, py = (left, width - right), (height - bottom, top)
    for t in yticks:
        y = scale(t, ydom, py)
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        body.append(f'<text x="{left - 4}" y="{y + 3:.1f}" class="cl" text-anchor="end">{_label(t)}</text>')
    for t in nice_ticks(*xdom, 5):
        if xdom[0] <= t <= xdom[1]:
            x = scale(t, xdom, px)
            body.append(
                f'<text x="{x:.1f}" y="{height - bottom + 14}" class="cl" text-anchor="middle">{_label(t)}</text>'
            )
    for m in markers:
        if xdom[0] <= m <= xdom[1]:
            x = scale(m, xdom, px)
            body.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" class="marker">'
                f"<title>{escape(marker_label)} at step {m:g}</title></line>"
            )
    for i, (name, (sx, sy)) in enumerate(series.items()):
        pts = " ".join(
            f"{scale(x, xdom, px):.1f},{scale(y, ydom, py):.1f}"
            for x, y in zip(sx, sy, strict=True)
            if math.isfinite(y)
        )
        body.append(f'<polyline points="{pts}" fill="none" stroke="{colour(i)}" stroke-width="1.5"/>')
        if len(series) > 1:  # legend under the title
            lx = left + 110 * i
            ly = 27
            body.append(
                f'<line x1="{lx}" x2="{lx + 14}" y1="{ly}" y2="{ly}" stroke="{colour(i)}" stroke-width="2"/>'
            )
            body.append(f'<text x="{lx + 18}" y="{ly + 3}" class="cl">{escape(name)}</text>')
    body.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 4}" class="cl" text-anchor="middle">step</text>'
    )
    return _svg(width, height, body, title)


def winrate_chart(
    rows: Sequence[tuple[str, str, float, float, float]],
    title: str,
    notes: Mapping[tuple[str, str], str] | None = None,
) -> str:
    """Win rates with their intervals: one line per (metric, run), dot and whisker on a 0–1 scale, 0.5 marked.

    `rows` are (run, metric, win rate, interval low, interval high), grouped by metric in their order; `notes`
    adds a word after a line's numbers (which metric a "lowest metric" line is).
    """
    notes = notes or {}
    runs = list(dict.fromkeys(r[0] for r in rows))
    metrics = list(dict.fromkeys(r[1] for r in rows))
    by_key = {(r[0], r[1]): r for r in rows}
    line, gap = 16, 10
    left, right, top = 150, 180, 46
    height = top + len(metrics) * (len(runs) * line + gap) + 30
    width = 690
    px = (left, width - right)
    body = [f'<text x="8" y="16" class="ct">{escape(title)}</text>']
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = scale(t, (0, 1), px)
        cls = "half" if t == 0.5 else "grid"
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{height - 26}" class="{cls}"/>')
        body.append(f'<text x="{x:.1f}" y="{height - 12}" class="cl" text-anchor="middle">{t:g}</text>')
    y = top
    for metric in metrics:
        body.append(f'<text x="{left - 8}" y="{y + line * len(runs) / 2 + 4:.1f}" class="cl" text-anchor="end">'
                    f"{escape(metric)}</text>")  # fmt: skip
        for j, run in enumerate(runs):
            row = by_key.get((run, metric))
            cy = y + j * line + line / 2
            if row is not None and all(math.isfinite(v) for v in row[2:]):
                _, _, rate, low, high = row
                x0, x1, xc = (scale(v, (0, 1), px) for v in (low, high, rate))
                note = f" {notes[(run, metric)]}" if (run, metric) in notes else ""
                tip = f"{run} · {metric}{note}: {rate:.3f} [{low:.3f}, {high:.3f}]"
                body.append(
                    f"<g><title>{escape(tip)}</title>"
                    f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{cy:.1f}" y2="{cy:.1f}" stroke="{colour(j)}" stroke-width="2"/>'
                    f'<circle cx="{xc:.1f}" cy="{cy:.1f}" r="4" fill="{colour(j)}"/>'
                    f'<text x="{width - right + 6}" y="{cy + 4:.1f}" class="cl">{rate:.3f} [{low:.2f}, {high:.2f}]'
                    f"{escape(note)}</text></g>"
                )
        y += len(runs) * line + gap
    for j, run in enumerate(runs):  # legend under the title
        lx = left + 110 * j
        body.append(f'<circle cx="{lx}" cy="{top - 20}" r="4" fill="{colour(j)}"/>')
        body.append(f'<text x="{lx + 8}" y="{top - 16}" class="cl">{escape(run)}</text>')
    return _svg(width, height, body, title)


def histogram_chart(
    edges: Sequence[float], counts: Sequence[int], title: str, width: int = 240, height: int = 130
) -> str:
    """Bars of a histogram (bin edges and counts), with the range under it."""
    left, right, top, bottom = 6, 6, 20, 20
    body = [f'<text x="{left}" y="14" class="ct">{escape(title)}</text>']
    if not counts:
        body.append(f'<text x="{left}" y="{height / 2}" class="cl">no finite scores</text>')
        return _svg(width, height, body, title)
    peak = max(counts) or 1
    bar = (width - left - right) / len(counts)
    for i, c in enumerate(counts):
        h = (height - top - bottom) * c / peak
        body.append(
            f'<rect x="{left + i * bar:.1f}" y="{height - bottom - h:.1f}" width="{max(bar - 1, 0.5):.1f}" '
            f'height="{h:.1f}" fill="{colour(0)}"><title>[{edges[i]:.4g}, {edges[i + 1]:.4g}): {c:,}</title></rect>'
        )
    body.append(f'<text x="{left}" y="{height - 5}" class="cl">{_label(edges[0])}</text>')
    body.append(
        f'<text x="{width - right}" y="{height - 5}" class="cl" text-anchor="end">{_label(edges[-1])}</text>'
    )
    return _svg(width, height, body, title)
