"""Latency and volume plots for the admin web console, drawn on the server as inline SVG markup.

The console is served with ``Content-Security-Policy: default-src 'self'``, so a JavaScript
charting library, ``<script>``/``<style>`` elements and ``style="..."`` attributes are all out.
Plain SVG with presentation attributes (``stroke="#1f77b4"``) needs none of them, renders without
JavaScript and can be checked in tests by parsing it as XML. Standard library only.

Every piece of text (titles, units, labels, series names) may come from callers or config, so
it is escaped with :func:`html.escape`; coordinates are rounded to one decimal place to keep the
markup small and stable.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Distinguishable colours (matplotlib's "tab10"); series past the end reuse them in order.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
# More x labels than this overlap at the default width.
MAX_X_LABELS = 8
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 48, 32  # room for tick labels, title + legend, x labels
_GRID, _INK, _MUTED = "#e5e5e5", "#333333", "#666666"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round axis values (steps of 1, 2 or 5 × 10^n) covering ``low..high`` in at most ``count`` steps."""
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"tick range must be finite, not {low!r}..{high!r}")
    low, high = min(low, high), max(low, high)
    if high == low:
        high = low + (abs(low) or 1.0)  # a flat line still needs an axis with some height
    magnitude = 10.0 ** math.floor(math.log10((high - low) / count))
    candidates = [m * magnitude * 10**k for k in range(3) for m in (1, 2, 5)]
    for step in candidates:
        # The epsilon keeps float noise (1.1 / 0.1 == 11.000000000000002) from adding a needless step.
        first = math.floor(low / step + 1e-9)
        last = math.ceil(high / step - 1e-9)
        if last - first <= count:
            break
    decimals = max(0, -math.floor(math.log10(step)))  # so 3 * 0.1 comes out as 0.3, not 0.30000000000000004
    return [round(i * step, decimals) + 0.0 for i in range(first, last + 1)]  # + 0.0: no "-0"


@dataclass(frozen=True)
class _Frame:
    """The plot area inside the margins and the value range its height stands for."""

    width: int
    height: int
    ticks: list[float]

    @property
    def left(self) -> float:
        return float(_LEFT)

    @property
    def right(self) -> float:
        return float(self.width - _RIGHT)

    @property
    def top(self) -> float:
        return float(_TOP)

    @property
    def bottom(self) -> float:
        return float(self.height - _BOTTOM)

    def y(self, value: float) -> float:
        low, high = self.ticks[0], self.ticks[-1]
        return self.bottom - (value - low) / (high - low) * (self.bottom - self.top)


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float) -> str:
    """A coordinate, one decimal place, without a useless ``.0`` or a ``-0``."""
    text = f"{round(value, 1) + 0.0:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _value_text(value: float, decimals: int = 1) -> str:
    """A value for people: ``decimals`` places at most, trailing zeros dropped."""
    text = f"{round(value, decimals) + 0.0:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _with_unit(value: float, unit: str, decimals: int = 1) -> str:
    text = _value_text(value, decimals)
    return f"{text} {unit}" if unit else text


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _check_size(width: int, height: int) -> None:
    if width <= _LEFT + _RIGHT or height <= _TOP + _BOTTOM:
        raise ValueError(f"chart of {width}x{height} leaves no room to plot in")


def _open_svg(title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}"'
        f' height="{height}" role="img" aria-label="{_esc(title)}" font-family="sans-serif">',
        f"<title>{_esc(title)}</title>",
        f'<text x="{_LEFT}" y="18" font-size="14" font-weight="bold" fill="{_INK}">{_esc(title)}</text>',
    ]


def _no_data(title: str, width: int, height: int) -> str:
    return "".join(_open_svg(title, width, height)) + (
        f'<text class="no-data" x="{_num(width / 2)}" y="{_num(height / 2)}" text-anchor="middle"'
        f' dominant-baseline="middle" font-size="14" fill="{_MUTED}">No data</text></svg>'
    )


def _y_axis(frame: _Frame, unit: str) -> list[str]:
    # Ticks 0.05 apart need two places, where every other number in the markup has one.
    step = frame.ticks[1] - frame.ticks[0]
    decimals = max(1, -math.floor(math.log10(step)))
    parts = ['<g class="y-axis">']
    for tick in frame.ticks:
        y = _num(frame.y(tick))
        parts.append(f'<line x1="{_num(frame.left)}" y1="{y}" x2="{_num(frame.right)}" y2="{y}"'
                     f' stroke="{_GRID}" stroke-width="1"/>')
        parts.append(f'<text x="{_num(frame.left - 6)}" y="{y}" text-anchor="end" dominant-baseline="middle"'
                     f' font-size="11" fill="{_MUTED}">{_esc(_with_unit(tick, unit, decimals))}</text>')
    parts.append(f'<line x1="{_num(frame.left)}" y1="{_num(frame.top)}" x2="{_num(frame.left)}"'
                 f' y2="{_num(frame.bottom)}" stroke="{_INK}" stroke-width="1"/></g>')
    return parts


def _x_labels(labels: Sequence[str], centres: Sequence[float], frame: _Frame) -> list[str]:
    every = max(1, math.ceil(len(labels) / MAX_X_LABELS))  # ceil(n / every) <= MAX_X_LABELS
    parts = ['<g class="x-axis">']
    for index in range(0, len(labels), every):
        parts.append(f'<text x="{_num(centres[index])}" y="{_num(frame.bottom + 18)}" text-anchor="middle"'
                     f' font-size="11" fill="{_MUTED}">{_esc(labels[index])}</text>')
    parts.append("</g>")
    return parts


def _legend(names: Sequence[str], frame: _Frame) -> list[str]:
    parts, x = ['<g class="legend">'], frame.left
    for index, name in enumerate(names):
        colour = PALETTE[index % len(PALETTE)]
        parts.append(f'<rect x="{_num(x)}" y="28" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{_num(x + 14)}" y="37" font-size="12" fill="{_INK}">{_esc(name)}</text>')
        x += 28 + 7 * len(name)  # no font metrics on the server: about 7px a character at 12px
    parts.append("</g>")
    return parts


def line_chart(series: Mapping[str, Sequence[tuple[str, float | None]]], *, title: str, unit: str,
               width: int = 720, height: int = 260) -> str:
    """One line per series over shared x labels; a ``None`` value leaves a gap in its line."""
    _check_size(width, height)
    names = list(series)
    labels = [label for label, _ in series[names[0]]] if names else []
    for name in names:
        if len(series[name]) != len(labels):
            raise ValueError(f"series {name!r} has {len(series[name])} points but the x axis"
                             f" (from series {names[0]!r}) has {len(labels)}")
    values = [v for points in series.values() for _, y in points if (v := _finite(y)) is not None]
    if not values:
        return _no_data(title, width, height)

    frame = _Frame(width, height, nice_ticks(min(0.0, min(values)), max(values)))
    step = (frame.right - frame.left) / max(1, len(labels) - 1)
    # A single point has no line to span: put it in the middle rather than on the y axis.
    xs = [frame.left + i * step for i in range(len(labels))] if len(labels) > 1 else [
        (frame.left + frame.right) / 2]
    parts = _open_svg(title, width, height) + _y_axis(frame, unit) + _x_labels(labels, xs, frame)
    for index, name in enumerate(names):
        colour = PALETTE[index % len(PALETTE)]
        parts.append(f'<g class="series" data-series="{_esc(name)}">')
        runs: list[list[str]] = [[]]
        for x, (_, y) in zip(xs, series[name]):
            value = _finite(y)
            if value is None:
                runs.append([])  # a gap: the next value starts a new line
            else:
                runs[-1].append(f"{_num(x)},{_num(frame.y(value))}")
        for run in filter(None, runs):
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>')
            else:
                parts.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}"'
                             f' stroke-width="2" stroke-linejoin="round"/>')
        parts.append("</g>")
    return "".join(parts + _legend(names, frame) + ["</svg>"])


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, unit: str,
              width: int = 720, height: int = 260, stacked: Mapping[str, Sequence[float]] | None = None) -> str:
    """One vertical bar per ``(label, value)``, or per label a stack of the ``stacked`` series' values."""
    _check_size(width, height)
    for name, values in (stacked or {}).items():
        if len(values) != len(bars):
            raise ValueError(f"stacked series {name!r} has {len(values)} values for {len(bars)} bars")
    if not bars:
        return _no_data(title, width, height)

    labels = [label for label, _ in bars]
    layers = dict(stacked) if stacked else {"": [total for _, total in bars]}
    # Positive segments stack upwards from 0 and negative ones downwards, so neither hides the other.
    segments: list[tuple[int, str, float, float, float]] = []  # column, series, value, from, to
    for column in range(len(bars)):
        above = below = 0.0
        for name, values in layers.items():
            value = _finite(values[column])
            if value is None:
                continue
            start = above if value >= 0 else below
            segments.append((column, name, value, start, start + value))
            above, below = (start + value, below) if value >= 0 else (above, start + value)
    ends = [end for *_, end in segments] + [v for _, t in bars if (v := _finite(t)) is not None]
    frame = _Frame(width, height, nice_ticks(min([0.0, *ends]), max([0.0, *ends])))
    band = (frame.right - frame.left) / len(bars)
    centres = [frame.left + (i + 0.5) * band for i in range(len(bars))]

    parts = _open_svg(title, width, height) + _y_axis(frame, unit) + _x_labels(labels, centres, frame)
    for index, name in enumerate(layers):
        series_attr = f' data-series="{_esc(name)}"' if stacked else ""
        parts.append(f'<g class="series"{series_attr} fill="{PALETTE[index % len(PALETTE)]}">')
        for column, _, value, start, end in (s for s in segments if s[1] == name):
            top, bottom = frame.y(max(start, end)), frame.y(min(start, end))
            label = labels[column]
            tooltip = f"{label} · {name}: " if stacked else f"{label}: "
            parts.append(f'<rect class="bar" data-label="{_esc(label)}" data-value="{_value_text(value)}"'
                         f' x="{_num(centres[column] - band * 0.35)}" y="{_num(top)}" width="{_num(band * 0.7)}"'
                         f' height="{_num(bottom - top)}"><title>{_esc(tooltip + _with_unit(value, unit))}'
                         f"</title></rect>")
        parts.append("</g>")
    if stacked:
        parts += _legend(list(layers), frame)
    return "".join(parts + ["</svg>"])
