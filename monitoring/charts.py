"""Small inline SVG charts for the HTML report: no library, no script, no external resource.

Every chart is an `<svg class="chart" data-chart=...>` with a `<title>`, and every series
carries its values in `data-values`, so the report stays readable by programs too. Points
and bars have `<title>` tooltips.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c")
WIDTH, HEIGHT = 940, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 300, 36, 40


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:,.2f}".rstrip("0").rstrip(".")


def _open(title: str, slug: str, height: int = HEIGHT) -> list[str]:
    return [
        f'<svg class="chart" data-chart="{escape(slug)}" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="20" class="chart-title" font-size="15" font-weight="600">{escape(title)}</text>',
    ]


def _legend(names: list[str], colours: list[str]) -> list[str]:
    out = []
    for i, (name, colour) in enumerate(zip(names, colours, strict=True)):
        y = TOP + 8 + i * 18
        out.append(f'<rect x="{WIDTH - RIGHT + 14}" y="{y - 9}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{WIDTH - RIGHT + 32}" y="{y + 1}" font-size="11">{escape(name)}</text>')
    return out


def _y_axis(lo: float, hi: float, height: int) -> list[str]:
    out = []
    bottom = height - BOTTOM
    for i in range(5):
        value = lo + (hi - lo) * i / 4
        y = bottom - (bottom - TOP) * i / 4
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{_fmt(value)}</text>')
    return out


def _x_labels(labels: list[str], xs: list[float], height: int) -> list[str]:
    step = max(1, len(labels) // 12)
    return [
        f'<text x="{x:.1f}" y="{height - BOTTOM + 16}" font-size="10" text-anchor="middle">{escape(label)}</text>'
        for i, (label, x) in enumerate(zip(labels, xs, strict=True))
        if i % step == 0 or i == len(labels) - 1
    ]


def nice_ceiling(value: float) -> float:
    """The smallest round number (1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8 x 10^k) at or above `value`: four round ticks."""
    if value <= 0:
        return 1.0
    scale = 10 ** math.floor(math.log10(value))
    return next(m * scale for m in (1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8, 10) if m * scale >= value)


def empty_chart(title: str, slug: str, note: str) -> str:
    """A chart frame that says why there is nothing to draw."""
    return "\n".join([*_open(title, slug, 80), f'<text x="{LEFT}" y="52" font-size="12" fill="#6b7280">{escape(note)}</text>', "</svg>"])


def line_chart(
    title: str,
    slug: str,
    labels: list[str],
    series: dict[str, list[float | None]],
    y_range: tuple[float, float] | None = None,
    marks: dict[str, int] | None = None,
    empty_note: str = "no data yet",
    x_name: str = "run",
) -> str:
    """Lines over the x labels (runs by default; `x_name` names them in tooltips); None values
    leave a gap. y_range defaults to the data's. `marks` rings one point of a series (by index)
    in red: an anomaly."""
    values = [v for vs in series.values() for v in vs if v is not None]
    if not labels or not values:
        return empty_chart(title, slug, empty_note)
    lo, hi = y_range or (min(values), max(values))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bottom = HEIGHT - BOTTOM
    span = max(len(labels) - 1, 1)
    xs = [LEFT + (WIDTH - RIGHT - LEFT) * (i / span if len(labels) > 1 else 0.5) for i in range(len(labels))]
    out = _open(title, slug) + _y_axis(lo, hi, HEIGHT) + _x_labels(labels, xs, HEIGHT)
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    for (name, vs), colour in zip(series.items(), colours, strict=True):
        points = [
            (x, bottom - (bottom - TOP) * (v - lo) / (hi - lo), v, label)
            for x, v, label in zip(xs, vs, labels, strict=True)
            if v is not None
        ]
        data = ",".join("" if v is None else f"{v:.6g}" for v in vs)
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
        out.append(
            f'<polyline class="series" data-series="{escape(name)}" data-values="{data}" fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>'
        )
        out += [
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{escape(name)}, {escape(x_name)} {escape(label)}: {_fmt(v)}</title></circle>'
            for x, y, v, label in points
        ]
        marked = (marks or {}).get(name)
        if marked is not None and vs[marked] is not None:
            x, y = xs[marked], bottom - (bottom - TOP) * (vs[marked] - lo) / (hi - lo)
            out.append(
                f'<circle class="anomaly" data-series="{escape(name)}" cx="{x:.1f}" cy="{y:.1f}" r="8" fill="none" stroke="#dc2626" '
                f'stroke-width="2"><title>anomaly: {escape(name)}, run {escape(labels[marked])}</title></circle>'
            )
    out += _legend(list(series), colours)
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(title: str, slug: str, items: list[tuple[str, float]]) -> str:
    """Horizontal bars, largest first as given."""
    if not items:
        return empty_chart(title, slug, "nothing to show")
    height = TOP + 26 * len(items) + 16
    top = max(v for _, v in items) or 1
    width = WIDTH - 340
    out = _open(title, slug, height)
    for i, (label, value) in enumerate(items):
        y = TOP + i * 26
        w = max(width * value / top, 1)
        out.append(f'<text x="176" y="{y + 14}" font-size="11" text-anchor="end">{escape(label)}</text>')
        out.append(
            f'<rect class="bar" data-label="{escape(label)}" data-value="{value:g}" x="184" y="{y}" width="{w:.1f}" height="18" fill="{PALETTE[1]}">'
            f"<title>{escape(label)}: {_fmt(value)}</title></rect>"
        )
        out.append(f'<text x="{184 + w + 6:.1f}" y="{y + 14}" font-size="11">{_fmt(value)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def stacked_bar_chart(title: str, slug: str, labels: list[str], stacks: dict[str, list[float]]) -> str:
    """Vertical bars per x label, each made of the stacks in order."""
    totals = [sum(vs[i] for vs in stacks.values()) for i in range(len(labels))]
    if not labels or not any(totals):
        return empty_chart(title, slug, "no runs yet")
    top = nice_ceiling(max(totals))
    bottom = HEIGHT - BOTTOM
    slot = (WIDTH - RIGHT - LEFT) / len(labels)
    xs = [LEFT + slot * (i + 0.5) for i in range(len(labels))]
    bar = min(slot * 0.7, 48.0)
    colours = [PALETTE[i] for i in (2, 3, 8, 0, 4, 5)][: len(stacks)]
    out = _open(title, slug) + _y_axis(0, top, HEIGHT) + _x_labels(labels, xs, HEIGHT)
    base = [0.0] * len(labels)
    for (name, vs), colour in zip(stacks.items(), colours, strict=True):
        data = ",".join(f"{v:g}" for v in vs)
        out.append(f'<g class="stack" data-series="{escape(name)}" data-values="{data}" fill="{colour}">')
        for i, v in enumerate(vs):
            if v <= 0:
                continue
            h = (bottom - TOP) * v / top
            y = bottom - (bottom - TOP) * base[i] / top - h
            out.append(
                f'<rect x="{xs[i] - bar / 2:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}">'
                f"<title>run {escape(labels[i])}, {escape(name)}: {_fmt(v)}</title></rect>"
            )
            base[i] += v
        out.append("</g>")
    out += _legend(list(stacks), colours)
    out.append("</svg>")
    return "\n".join(out)


def _heat_colour(share: float) -> str:
    """White (0) to the palette's blue (1)."""
    share = max(0.0, min(share, 1.0))
    r, g, b = (round(255 + (target - 255) * share) for target in (0x25, 0x63, 0xEB))
    return f"#{r:02x}{g:02x}{b:02x}"


def heat_map(
    title: str,
    slug: str,
    rows: list[str],
    columns: list[str],
    values: list[list[float | None]],
    scale: tuple[float, float] = (0.0, 1.0),
    fmt: Callable[[float], str] = "{:.0%}".format,
    empty_note: str = "nothing to show",
) -> str:
    """A grid of cells, one row per `rows` label and one column per `columns` label, coloured by
    value from white (scale[0]) to blue (scale[1] and above); None leaves a cell empty. Each cell
    carries data-row, data-col and data-value, and its value as text and tooltip."""
    if not rows or not columns:
        return empty_chart(title, slug, empty_note)
    label_w, cell_h = 90, 22
    cell_w = (WIDTH - label_w - 20) / len(columns)
    height = TOP + 18 + cell_h * len(rows) + 12
    lo, hi = scale
    out = _open(title, slug, height)
    for j, name in enumerate(columns):
        x = label_w + cell_w * (j + 0.5)
        out.append(f'<text x="{x:.1f}" y="{TOP + 10}" font-size="10" text-anchor="middle">{escape(name)}</text>')
    for i, (label, line) in enumerate(zip(rows, values, strict=True)):
        y = TOP + 18 + i * cell_h
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" font-size="11" text-anchor="end">{escape(label)}</text>')
        for j, value in enumerate(line):
            if value is None:
                continue
            share = (value - lo) / (hi - lo) if hi > lo else 1.0
            x = label_w + cell_w * j
            ink = "#ffffff" if share > 0.55 else "#111827"
            out.append(
                f'<rect class="cell" data-row="{escape(label)}" data-col="{escape(columns[j])}" data-value="{value:.6g}" x="{x:.1f}" y="{y}" '
                f'width="{cell_w - 1:.1f}" height="{cell_h - 1}" fill="{_heat_colour(share)}"><title>{escape(label)}, {escape(columns[j])}: '
                f"{escape(fmt(value))}</title></rect>"
            )
            if cell_w >= 30:
                out.append(
                    f'<text x="{x + cell_w / 2:.1f}" y="{y + 15}" font-size="10" text-anchor="middle" fill="{ink}">{escape(fmt(value))}</text>'
                )
    out.append("</svg>")
    return "\n".join(out)
