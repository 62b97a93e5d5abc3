"""Inline SVG charts, number formats and page markup for the reports: plain strings, no external assets (the only
script is one a report passes to html_page, inlined).

Every text that reaches the markup goes through `esc`; coordinates are written with one decimal so the same input
gives byte-identical output.
"""
from __future__ import annotations

import html
import math
import numbers
from dataclasses import dataclass

DASH = "—"  # shown for an undefined value
MUTED = "#9e9e9e"
GRID = "#e3e3e3"
MODEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def finite(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def decimals_for(*values, digits: int = 4, most: int = 8) -> int:
    """Decimals that show every finite value below 1e-3 with two significant digits (at least `digits`, at most
    `most`): small numbers in fixed notation, never scientific, and both ends of an interval alike."""
    small = [abs(v) for v in values if finite(v) and 0 < abs(v) < 1e-3]
    return min(most, max([digits, *(1 - math.floor(math.log10(v)) for v in small)]))


def num(v, digits: int = 4, sign: bool = False, decimals: int | None = None) -> str:
    """A metric value in fixed notation: 4 decimals, more for values below 1e-3 (two significant digits, at most
    8), scientific only from 1e6 up; "—" when undefined; ints with separators."""
    if not finite(v):
        return DASH
    if isinstance(v, numbers.Integral):
        return f"{v:+,}" if sign else f"{v:,}"
    plus = "+" if sign else ""
    if abs(v) < 1e6:
        return f"{v:{plus}.{decimals if decimals is not None else decimals_for(v, digits=digits)}f}"
    return f"{v:{plus}.{digits - 1}e}"


def count(v) -> str:
    """A row count with thousands separators, "—" when unknown."""
    return f"{int(round(v)):,}" if finite(v) else DASH


def interval(low, high, sign: bool = False) -> str:
    """"[low, high]" with both ends to the same decimals (never scientific below 1e6), or "" when unknown."""
    if not (finite(low) and finite(high)):
        return ""
    d = decimals_for(low, high)
    return f"[{num(low, sign=sign, decimals=d)}, {num(high, sign=sign, decimals=d)}]"


def _f(x: float) -> str:
    return f"{x:.1f}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] at a 1-2-5 step."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = [round((first + i) * step, 12) for i in range(int(math.floor(hi / step + 1e-9)) - first + 1)]
    return ticks or [lo]


def tick_label(t: float, ticks: list[float]) -> str:
    """`t` with as few decimals as every tick of its axis needs (0.25 stays 0.25, 0.5 becomes 0.50 beside it)."""
    decimals = next((d for d in range(7) if all(abs(round(v, d) - v) < 1e-9 * max(1.0, abs(v)) for v in ticks)), 6)
    return f"{t:.{decimals}f}"


def domain(values, ref: float | None = None) -> tuple[float, float]:
    """A padded [lo, hi] holding every finite value (and `ref`)."""
    vals = [v for v in values if finite(v)] + ([ref] if ref is not None else [])
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    if hi == lo:
        pad = abs(lo) * 0.05 or 0.5
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


@dataclass(frozen=True)
class Scale:
    """Linear map from [lo, hi] to pixels [a, b]."""

    lo: float
    hi: float
    a: float
    b: float

    def __call__(self, v: float) -> float:
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)


@dataclass(frozen=True)
class IntervalRow:
    """One row of a dot-and-whisker chart; `label` may be "" to continue the group above."""

    label: str
    value: float | None
    low: float | None
    high: float | None
    colour: str
    note: str = ""
    title: str = ""


def _whisker(x: Scale, y: float, value, low, high, colour: str) -> list[str]:
    out = []
    if finite(low) and finite(high):
        x0, x1 = _f(x(low)), _f(x(high))
        out.append(f'<line x1="{x0}" y1="{_f(y)}" x2="{x1}" y2="{_f(y)}" stroke="{colour}" stroke-width="1.5"/>')
        for xe in (x0, x1):
            out.append(f'<line x1="{xe}" y1="{_f(y - 3)}" x2="{xe}" y2="{_f(y + 3)}" stroke="{colour}"/>')
    if finite(value):
        out.append(f'<circle cx="{_f(x(value))}" cy="{_f(y)}" r="3.5" fill="{colour}"/>')
    return out


def axis_ticks(lo: float, hi: float, least: int = 4, most: int = 8) -> list[float]:
    """Round 1-2-5 ticks inside [lo, hi]: at least `least` of them where a finer step allows it."""
    ticks: list[float] = []
    for n in range(least + 1, 3 * most):
        ticks = [t for t in nice_ticks(lo, hi, n) if lo <= t <= hi]
        if len(ticks) >= least:
            break
    return ticks


def interval_chart(rows: list[IntervalRow], ref: float | None = None, plot_w: int | None = None,
                   page_w: int = 1130) -> str:
    """Dot-and-whisker rows on a shared axis; value and interval written at the right; a dashed line at `ref`.
    The plot takes the page width left after the labels and notes (`page_w`), at least 320 px."""
    row_h, top = 18, 22
    label_w = min(max(7 * max((len(r.label) for r in rows), default=0) + 14, 110), 340)
    note_w = 7 * max((len(r.note) for r in rows), default=0) + 20
    plot_w = plot_w or max(320, page_w - label_w - note_w)
    lo, hi = domain([v for r in rows for v in (r.value, r.low, r.high)], ref)
    x = Scale(lo, hi, label_w, label_w + plot_w)
    height = top + row_h * len(rows) + 6
    out = [f'<svg width="{label_w + plot_w + note_w}" height="{height}" '
           f'role="img" {FONT}>']
    ticks = axis_ticks(lo, hi, least=4, most=max(4, plot_w // 70))
    for t in ticks:
        xt = _f(x(t))
        out.append(f'<line x1="{xt}" y1="{top - 4}" x2="{xt}" y2="{height - 4}" stroke="{GRID}"/>')
        out.append(f'<text x="{xt}" y="{top - 8}" text-anchor="middle" fill="#555">{esc(tick_label(t, ticks))}</text>')
    if ref is not None:
        xr = _f(x(ref))
        out.append(f'<line x1="{xr}" y1="{top - 4}" x2="{xr}" y2="{height - 4}" stroke="#333" stroke-dasharray="3,3"/>')
    for i, r in enumerate(rows):
        y = top + row_h * i + row_h / 2
        if r.label and i:
            out.append(f'<line x1="0" y1="{_f(y - row_h / 2)}" x2="{label_w + plot_w + note_w}" '
                       f'y2="{_f(y - row_h / 2)}" stroke="{GRID}"/>')
        out.append(f"<g><title>{esc(r.title or r.label)}</title>")
        if r.label:
            out.append(f'<text x="{label_w - 8}" y="{_f(y + 4)}" text-anchor="end" fill="#222">{esc(r.label)}</text>')
        out.extend(_whisker(x, y, r.value, r.low, r.high, r.colour))
        out.append(f'<text x="{label_w + plot_w + 10}" y="{_f(y + 4)}" fill="{r.colour}">{esc(r.note)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def mini_interval(value, low, high, span: float, colour: str, width: int = 160) -> str:
    """A small bar for a table cell: whisker and dot on [-span, span] with a line at zero."""
    span = span if finite(span) and span > 0 else 1.0
    x = Scale(-span, span, 6, width - 6)
    zero = _f(x(0.0))
    parts = [f'<svg width="{width}" height="14" role="img">',
             f'<line x1="{zero}" y1="0" x2="{zero}" y2="14" stroke="#333" stroke-dasharray="2,2"/>',
             *_whisker(x, 7.0, value, low, high, colour), "</svg>"]
    return "".join(parts)


def _axes(x: Scale, y: Scale, xticks: list[float], yticks: list[float], xlabel: str, ylabel: str,
          ylabels: list[str] | None = None) -> list[str]:
    out = [f'<line x1="{_f(x.a)}" y1="{_f(y.a)}" x2="{_f(x.b)}" y2="{_f(y.a)}" stroke="#555"/>',
           f'<line x1="{_f(x.a)}" y1="{_f(y.a)}" x2="{_f(x.a)}" y2="{_f(y.b)}" stroke="#555"/>']
    for t in xticks:
        out.append(f'<line x1="{_f(x(t))}" y1="{_f(y.a)}" x2="{_f(x(t))}" y2="{_f(y.b)}" stroke="{GRID}"/>')
        out.append(f'<text x="{_f(x(t))}" y="{_f(y.a + 14)}" text-anchor="middle" fill="#555">'
                   f"{esc(tick_label(t, xticks))}</text>")
    for i, t in enumerate(yticks):
        label = ylabels[i] if ylabels else tick_label(t, yticks)
        out.append(f'<line x1="{_f(x.a)}" y1="{_f(y(t))}" x2="{_f(x.b)}" y2="{_f(y(t))}" stroke="{GRID}"/>')
        out.append(f'<text x="{_f(x.a - 4)}" y="{_f(y(t) + 4)}" text-anchor="end" fill="#555">{esc(label)}</text>')
    out.append(f'<text x="{_f((x.a + x.b) / 2)}" y="{_f(y.a + 30)}" text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text transform="translate(12 {_f((y.a + y.b) / 2)}) rotate(-90)" text-anchor="middle">'
               f"{esc(ylabel)}</text>")
    return out


def reliability_chart(bins: list[dict], colour: str, size: int = 260) -> str:
    """Mean score (x) against fraction positive (y) per bin, dot area by rows; the diagonal is perfect calibration."""
    left, bottom, pad = 48, 38, 10
    x = Scale(0.0, 1.0, left, left + size)
    y = Scale(0.0, 1.0, pad + size, pad)
    right = 2 * pad  # room for the last tick's label
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    out = [f'<svg width="{left + size + right}" height="{pad + size + bottom}" '
           f'role="img" {FONT}>', *_axes(x, y, ticks, ticks, "mean score", "fraction positive"),
           f'<line x1="{_f(x(0))}" y1="{_f(y(0))}" x2="{_f(x(1))}" y2="{_f(y(1))}" stroke="#777" '
           f'stroke-dasharray="4,3"/>']
    pts = [b for b in bins if finite(b.get("count")) and b["count"] > 0
           and finite(b.get("mean_score")) and finite(b.get("frac_positive"))]
    most = max((b["count"] for b in pts), default=1)
    if len(pts) > 1:
        line = " ".join(f"{_f(x(b['mean_score']))},{_f(y(b['frac_positive']))}" for b in pts)
        out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    for b in pts:
        r = 2.0 + 5.0 * math.sqrt(b["count"] / most)
        out.append(f'<circle cx="{_f(x(b["mean_score"]))}" cy="{_f(y(b["frac_positive"]))}" r="{_f(r)}" '
                   f'fill="{colour}" fill-opacity="0.7"><title>{esc(num(b["bin_low"]))}–{esc(num(b["bin_high"]))}: '
                   f'{esc(num(b["count"]))} rows, mean score {esc(num(b["mean_score"]))}, '
                   f'fraction positive {esc(num(b["frac_positive"]))}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def histogram_chart(edges: list[float], series: list[tuple[str, list[float], str]], width: int = 420,
                    height: int = 200) -> str:
    """Overlaid step histograms, each series normalised to its share of rows per bin (classes of any size compare)."""
    left, bottom, pad, legend = 52, 38, 10, 22
    x = Scale(edges[0], edges[-1], left, left + width) if edges[-1] > edges[0] else Scale(0, 1, left, left + width)
    shares = []
    for name, counts, colour in series:
        if len(counts) != len(edges) - 1:
            raise ValueError(f"score histogram {name!r}: {len(counts)} counts for {len(edges)} edges; "
                             "expected one count per bin (len(edges) - 1)")
        total = sum(c for c in counts if finite(c))
        shares.append((name, [c / total if total and finite(c) else 0.0 for c in counts], colour, total))
    top = max((s for _, sh, _, _ in shares for s in sh), default=0.0) or 1.0
    y = Scale(0.0, top * 1.05, legend + height, legend)
    yticks = [t for t in nice_ticks(0.0, top * 1.05, 6) if t <= top * 1.05]
    xticks = [t for t in nice_ticks(x.lo, x.hi) if x.lo <= t <= x.hi]
    out = [f'<svg width="{left + width + pad}" height="{legend + height + bottom}" '
           f'role="img" {FONT}>',
           *_axes(x, y, xticks, yticks, "score", "share of the class's rows",
                  [tick_label(t * 100, [v * 100 for v in yticks]) + "%" for t in yticks])]
    for k, (name, sh, colour, total) in enumerate(shares):
        d = [f"M{_f(x(edges[0]))},{_f(y(0))}"]
        for i, s in enumerate(sh):
            d.append(f"L{_f(x(edges[i]))},{_f(y(s))}L{_f(x(edges[i + 1]))},{_f(y(s))}")
        d.append(f"L{_f(x(edges[len(sh)]))},{_f(y(0))}Z")
        out.append(f'<path d="{"".join(d)}" fill="{colour}" fill-opacity="0.25" stroke="{colour}" stroke-width="1.2"/>')
        lx = left + 180 * k  # the legend sits above the plot, one entry per series
        out.append(f'<rect x="{lx}" y="4" width="10" height="10" fill="{colour}" fill-opacity="0.6"/>')
        out.append(f'<text x="{lx + 15}" y="13">{esc(name)} ({esc(count(total))} rows)</text>')
    out.append("</svg>")
    return "".join(out)


def curve_chart(series: list[tuple[str, list[tuple[float, float]], str]], xlabel: str, ylabel: str,
                diagonal: bool = False, size: int = 260) -> str:
    """Curves on the unit square (ROC, precision–recall): one polyline per (name, points, colour), a legend above,
    the chance diagonal when asked."""
    left, bottom, pad, legend = 48, 38, 20, 18 * len(series) + 4  # pad: room for the last tick's label
    x = Scale(0.0, 1.0, left, left + size)
    y = Scale(0.0, 1.0, legend + size, legend)
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    out = [f'<svg width="{left + size + pad}" height="{legend + size + bottom}" role="img" {FONT}>',
           *_axes(x, y, ticks, ticks, xlabel, ylabel)]
    if diagonal:
        out.append(f'<line x1="{_f(x(0))}" y1="{_f(y(0))}" x2="{_f(x(1))}" y2="{_f(y(1))}" stroke="#777" '
                   'stroke-dasharray="4,3"/>')
    for k, (name, pts, colour) in enumerate(series):
        line = " ".join(f"{_f(x(a))},{_f(y(b))}" for a, b in pts if finite(a) and finite(b))
        if line:
            out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        out.append(f'<rect x="{left}" y="{4 + 18 * k}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{left + 15}" y="{13 + 18 * k}">{esc(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def html_table(head: list[str], rows: list[tuple[str, list]], numeric: set[int] = frozenset(), cls: str = "") -> str:
    """`rows` are (row class, cells as HTML already escaped); `numeric` columns are right-aligned; `cls` is the
    table's class. A cell may be (html, sort key): the key, a number, is written as the cell's data-sort attribute
    for the report's sorting script (an interval's estimate: "[low, high]" alone does not carry it)."""
    out = [f'<table class="{esc(cls)}"><thead><tr>' if cls else "<table><thead><tr>",
           *(f"<th>{esc(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row_cls, cells in rows:
        out.append(f'<tr class="{row_cls}">' if row_cls else "<tr>")
        for i, cell in enumerate(cells):
            text, key = cell if isinstance(cell, tuple) else (cell, None)
            attrs = (' class="n"' if i in numeric else "") + (f' data-sort="{key!r}"' if finite(key) else "")
            out.append(f"<td{attrs}>{text}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def html_page(title: str, header: str, sections: dict[str, str], titles: dict[str, str], css: str,
              script: str = "") -> str:
    """A self-contained report page: the header, a nav of the non-empty sections, the sections in order; `script`,
    when given, is inlined at the end of the body (it must not be needed to read the page)."""
    nav = "".join(f'<a href="#{k}">{esc(titles[k])}</a>' for k, v in sections.items() if v)
    body = "\n".join([header, f"<nav>{nav}</nav>", *(v for v in sections.values() if v)])
    tail = f"<script>{script}</script>\n" if script else ""
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n{body}\n{tail}</body>\n</html>\n")
