"""Plots for the HTML report as inline SVG (the page needs no external assets): paired bars of two distributions, a
line over time, and class shares over time."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

PALETTE = ("#1565c0", "#2e7d32", "#ef6c00", "#c62828", "#6a1b9a", "#00838f", "#ad1457", "#827717")
_WIDTH, _HEIGHT, _LEFT, _TOP, _BOTTOM = 640, 180, 52, 16, 30


def bars(names: list[str], reference: list[float], live: list[float], title: str) -> str:
    """Reference (grey) and live (blue) shares per bin, side by side."""
    width, height, top, bottom = 520, 170, 20, 40
    step = width / max(len(names), 1)
    peak = max([*reference, *live, 1e-9])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f"<title>{html.escape(title)}</title>"]
    for i, (name, r, v) in enumerate(zip(names, reference, live, strict=True)):
        x = i * step
        for offset, share, colour in ((0.1, r, "#9e9e9e"), (0.5, v, "#1565c0")):
            h = (height - top - bottom) * share / peak
            parts.append(f'<rect x="{x + step * offset:.1f}" y="{height - bottom - h:.1f}" width="{step * 0.4:.1f}" '
                         f'height="{h:.1f}" fill="{colour}"><title>{html.escape(name)}: {share:.1%}</title></rect>')
        parts.append(f'<text x="{x + step / 2:.1f}" y="{height - bottom + 14}" font-size="9" text-anchor="middle" '
                     f'transform="rotate(20 {x + step / 2:.1f} {height - bottom + 14})">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line(values: Sequence[float | None], starts: Sequence[float], title: str, *, plot: str, unit: str = "",
         percent: bool = False) -> str:
    """`values` (None: no data, a gap) at the times `starts`, from 0 to the highest value."""
    peak = max((v for v in values if v is not None), default=0.0) or 1.0
    step = (_WIDTH - _LEFT - 8) / max(len(values) - 1, 1)
    parts = _frame(title, plot, starts, _label(peak, unit, percent))
    segment: list[str] = []
    for i, value in enumerate([*values, None]):
        if value is not None:
            y = _HEIGHT - _BOTTOM - (_HEIGHT - _TOP - _BOTTOM) * value / peak
            segment.append(f"{_LEFT + i * step:.1f},{y:.1f}")
        elif segment:
            if len(segment) == 1:
                cx, cy = segment[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{PALETTE[0]}"/>')
            else:
                parts.append(f'<polyline fill="none" stroke="{PALETTE[0]}" stroke-width="1.5" '
                             f'points="{" ".join(segment)}"/>')
            segment = []
    parts.append("</svg>")
    return "".join(parts)


def colour(index: int) -> str:
    """The colour of the `index`-th series: the palette's, then hues that do not repeat it."""
    if index < len(PALETTE):
        return PALETTE[index]
    return f"hsl({(index - len(PALETTE)) * 137.508 % 360:.0f},65%,40%)"


def stacked(labels: Sequence[str], rows: Sequence[Sequence[int]], starts: Sequence[float], title: str, *,
            plot: str) -> str:
    """Each label's share of every point's counts, stacked to 100 % (empty points left blank), with a legend below
    the plot naming each label next to a swatch of its colour (wrapped onto as many lines as it needs)."""
    step = (_WIDTH - _LEFT - 8) / max(len(rows), 1)
    legend, legend_height = _legend(labels, _HEIGHT + 4)
    parts = _frame(title, plot, starts, "100.0%", height=_HEIGHT + legend_height)
    for i, counts in enumerate(rows):
        total = sum(counts)
        if not total:
            continue
        y = float(_HEIGHT - _BOTTOM)
        for j, n in enumerate(counts):
            h = (_HEIGHT - _TOP - _BOTTOM) * n / total
            y -= h
            if n:
                parts.append(f'<rect x="{_LEFT + i * step:.1f}" y="{y:.1f}" width="{max(step - 0.5, 0.5):.1f}" '
                             f'height="{h:.1f}" fill="{colour(j)}"><title>'
                             f'{html.escape(labels[j])}: {n} of {total} ({n / total:.1%})</title></rect>')
    parts.append(legend)
    parts.append("</svg>")
    return "".join(parts)


def _legend(labels: Sequence[str], top: float) -> tuple[str, int]:
    """A legend (a swatch and the name of each label, in order, wrapped to the plot's width) from `top` down, and
    the height it takes."""
    line_height, swatch, gap = 14, 10, 16
    items, x, y = [], float(_LEFT), top
    for j, label in enumerate(labels):
        width = swatch + 4 + 6.5 * len(label)  # a 10 px sans-serif character is about 6.5 px wide at most
        if x > _LEFT and x + width > _WIDTH - 8:
            x, y = float(_LEFT), y + line_height
        name = html.escape(label)
        items.append(f'<g class="legend-item" data-label="{name}"><rect x="{x:.1f}" y="{y:.1f}" width="{swatch}" '
                     f'height="{swatch}" fill="{colour(j)}"/><text x="{x + swatch + 4:.1f}" y="{y + swatch - 1:.1f}" '
                     f'font-size="10">{name}</text></g>')
        x += width + gap
    if not items:
        return "", 0
    return f'<g class="legend">{"".join(items)}</g>', int(y - top) + line_height + 4


def _frame(title: str, plot: str, starts: Sequence[float], top_label: str, *, height: int = _HEIGHT) -> list[str]:
    """The opening of a time plot: title, axes, the top value and the first and last times (UTC)."""
    bottom = _HEIGHT - _BOTTOM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" role="img" '
             f'data-plot="{html.escape(plot)}"><title>{html.escape(title)}</title>',
             f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" stroke="#999"/>',
             f'<line x1="{_LEFT}" y1="{bottom}" x2="{_WIDTH - 8}" y2="{bottom}" stroke="#999"/>',
             f'<text x="{_LEFT - 4}" y="{_TOP + 8}" font-size="10" text-anchor="end">{html.escape(top_label)}</text>',
             f'<text x="{_LEFT - 4}" y="{bottom}" font-size="10" text-anchor="end">0</text>']
    if starts:
        for x, at, anchor in ((_LEFT, starts[0], "start"), (_WIDTH - 8, starts[-1], "end")):
            parts.append(f'<text x="{x}" y="{bottom + 12}" font-size="10" text-anchor="{anchor}">'
                         f'{time.strftime("%m-%d %H:%M", time.gmtime(at))}</text>')
    return parts


def _label(value: float, unit: str, percent: bool) -> str:
    if percent:
        return f"{value:.1%}"
    return f"{value:.2f}{(' ' + unit) if unit else ''}"
