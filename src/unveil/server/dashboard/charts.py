"""Line charts as SVG, drawn on the server: no charting framework, nothing to download.

A chart is a few polylines over a time axis, with a title and a description
for screen readers; the numbers behind it are also given as a table by the
page, so nothing is only visual.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

__all__ = ["Line", "line_chart"]

_WIDTH, _HEIGHT = 640, 180
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 12, 12, 28
#: colours with at least 3:1 contrast on white, told apart by dash as well
_STYLES = (
    ("#4a5260", "6 4"),  # control: grey, dashed
    ("#0b57d0", ""),  # treatment: blue, solid
    ("#8a1c1c", "2 3"),
    ("#116329", "8 3 2 3"),
)


@dataclass(frozen=True, slots=True)
class Line:
    """One series: a name for the legend and (epoch seconds, value) points in time order."""

    name: str
    points: Sequence[tuple[float, float]]


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.3g}"
    return f"{value:.2g}"


def line_chart(title: str, lines: Sequence[Line], unit: str = "") -> str:
    """An accessible SVG line chart (markup, already escaped)."""
    points = [p for line in lines for p in line.points]
    label = escape(title)
    if not points:
        return (
            f'<svg role="img" aria-label="{label}: no data yet" viewBox="0 0 {_WIDTH} 40" '
            f'class="chart"><text x="8" y="24">No data yet</text></svg>'
        )
    t0, t1 = min(p[0] for p in points), max(p[0] for p in points)
    low, high = min(0.0, min(p[1] for p in points)), max(p[1] for p in points)
    if high == low:
        high = low + 1
    if t1 == t0:
        t1 = t0 + 1
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def x(t: float) -> float:
        return _LEFT + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return _TOP + (1 - (v - low) / (high - low)) * plot_h

    described = "; ".join(
        f"{line.name}: last {_number(line.points[-1][1])}{unit}" for line in lines if line.points
    )
    parts = [
        f'<svg role="img" viewBox="0 0 {_WIDTH} {_HEIGHT}" class="chart" '
        f'aria-label="{label}. {escape(described)}">',
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_LEFT + plot_w}" y2="{_TOP + plot_h}" '
        'stroke="#4a5260"/>',
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}" stroke="#4a5260"/>',
        f'<text x="{_LEFT - 6}" y="{_TOP + 10}" text-anchor="end">{_number(high)}{unit}</text>',
        f'<text x="{_LEFT - 6}" y="{_TOP + plot_h}" text-anchor="end">{_number(low)}{unit}</text>',
    ]
    for t, anchor in ((t0, "start"), (t1, "end")):
        when = datetime.fromtimestamp(t, UTC).strftime("%H:%M")
        parts.append(
            f'<text x="{x(t):.1f}" y="{_HEIGHT - 8}" text-anchor="{anchor}">{when} UTC</text>'
        )
    for i, line in enumerate(lines):
        colour, dash = _STYLES[i % len(_STYLES)]
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in line.points)
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dashed} points="{coords}">'
            f"<title>{escape(line.name)}</title></polyline>"
        )
        if len(line.points) <= 60:  # a mark on each point, so that one point is seen too
            parts += [
                f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>'
                for t, v in line.points
            ]
        legend_x, legend_y = _LEFT + 8 + (i % 2) * 180, _TOP + 6 + (i // 2) * 15
        parts.append(
            f'<line x1="{legend_x}" y1="{legend_y}" x2="{legend_x + 24}" y2="{legend_y}" '
            f'stroke="{colour}" stroke-width="2"{dashed}/>'
            f'<text x="{legend_x + 30}" y="{legend_y + 4}">{escape(line.name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
