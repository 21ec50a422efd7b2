"""Small self-made SVG charts for the trial report (no plotting library, nothing fetched).

Two chart kinds: percentile bands over time (5-95 % band and median line per arm, VPC style) and
overlaid histograms (step outlines per arm). Output is an ``<svg>`` string to inline in HTML;
every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

#: Colours per arm (colour-blind-safe Okabe-Ito palette).
PALETTE: Final = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")

_W, _H = 640, 300
_L, _R, _T, _B = 64, 16, 30, 46


@dataclass(frozen=True)
class Band:
    """One arm's band: lower, median and upper values at each time (None where undefined)."""

    low: Sequence[float | None]
    mid: Sequence[float | None]
    high: Sequence[float | None]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks = []
    v = start
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.3g}"


class _Frame:
    def __init__(self, x_lo: float, x_hi: float, y_lo: float, y_hi: float) -> None:
        self.x_lo, self.x_hi = x_lo, x_hi if x_hi > x_lo else x_lo + 1
        self.y_lo, self.y_hi = y_lo, y_hi if y_hi > y_lo else y_lo + 1

    def x(self, v: float) -> float:
        return _L + (v - self.x_lo) / (self.x_hi - self.x_lo) * (_W - _L - _R)

    def y(self, v: float) -> float:
        return _H - _B - (v - self.y_lo) / (self.y_hi - self.y_lo) * (_H - _T - _B)

    def axes(self, title: str, x_label: str, y_label: str) -> list[str]:
        out = [
            f'<text x="{_W / 2}" y="18" text-anchor="middle" class="t">{escape(title)}</text>',
            f'<line x1="{_L}" y1="{_H - _B}" x2="{_W - _R}" y2="{_H - _B}" class="ax"/>',
            f'<line x1="{_L}" y1="{_T}" x2="{_L}" y2="{_H - _B}" class="ax"/>',
            f'<text x="{(_L + _W - _R) / 2}" y="{_H - 8}" text-anchor="middle">'
            f"{escape(x_label)}</text>",
            f'<text x="14" y="{(_T + _H - _B) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 14 {(_T + _H - _B) / 2})">{escape(y_label)}</text>',
        ]
        for t in _nice_ticks(self.x_lo, self.x_hi, 8):
            x = self.x(t)
            out.append(
                f'<line x1="{x:.1f}" y1="{_H - _B}" x2="{x:.1f}" y2="{_H - _B + 4}" class="ax"/>'
            )
            out.append(
                f'<text x="{x:.1f}" y="{_H - _B + 16}" text-anchor="middle">{_fmt(t)}</text>'
            )
        for t in _nice_ticks(self.y_lo, self.y_hi, 5):
            y = self.y(t)
            out.append(f'<line x1="{_L}" y1="{y:.1f}" x2="{_W - _R}" y2="{y:.1f}" class="grid"/>')
            out.append(f'<text x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
        return out


def _svg(parts: list[str], label: str) -> str:
    style = (
        "<style>text{font:11px sans-serif;fill:#222}.t{font-weight:bold;font-size:12px}"
        ".ax{stroke:#444;stroke-width:1}.grid{stroke:#ddd;stroke-width:0.5}</style>"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" '
        f'height="{_H}" role="img" aria-label="{escape(label)}">{style}' + "".join(parts) + "</svg>"
    )


def _legend(names: Sequence[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        x = _L + 8 + i * 150
        c = PALETTE[i % len(PALETTE)]
        out.append(f'<rect x="{x}" y="{_T}" width="12" height="8" fill="{c}" opacity="0.6"/>')
        out.append(f'<text x="{x + 16}" y="{_T + 8}">{escape(name)}</text>')
    return out


def band_chart(
    times: Sequence[float],
    bands: Mapping[str, Band],
    *,
    title: str,
    x_label: str,
    y_label: str,
) -> str:
    """Percentile bands over time: shaded low-high band and a median line per arm."""
    values = [
        v
        for b in bands.values()
        for series in (b.low, b.mid, b.high)
        for v in series
        if v is not None and math.isfinite(v)
    ]
    y_hi = max(values, default=1.0) * 1.05
    frame = _Frame(float(times[0]), float(times[-1]), 0.0, y_hi if y_hi > 0 else 1.0)
    parts = frame.axes(title, x_label, y_label)
    for i, (_name, b) in enumerate(bands.items()):
        c = PALETTE[i % len(PALETTE)]
        pts = [
            (t, lo, hi)
            for t, lo, hi in zip(times, b.low, b.high, strict=True)
            if lo is not None and hi is not None
        ]
        if pts:
            upper = " ".join(f"{frame.x(t):.1f},{frame.y(hi):.1f}" for t, _, hi in pts)
            lower = " ".join(f"{frame.x(t):.1f},{frame.y(lo):.1f}" for t, lo, _ in reversed(pts))
            parts.append(f'<polygon points="{upper} {lower}" fill="{c}" opacity="0.18"/>')
        mid = [(t, m) for t, m in zip(times, b.mid, strict=True) if m is not None]
        if mid:
            line = " ".join(f"{frame.x(t):.1f},{frame.y(m):.1f}" for t, m in mid)
            parts.append(f'<polyline points="{line}" fill="none" stroke="{c}" stroke-width="1.6"/>')
    parts += _legend(list(bands))
    return _svg(parts, title)


def histogram_chart(
    edges: Sequence[float],
    counts: Mapping[str, Sequence[int]],
    *,
    title: str,
    x_label: str,
    max_bins: int = 80,
) -> str:
    """Overlaid histograms (share of patients per bin) as step outlines per arm.

    Bins are merged to at most ``max_bins`` and trimmed to the range holding data.
    """
    n = len(edges) - 1
    group = max(1, math.ceil(n / max_bins))
    merged_edges = list(edges[::group])
    if merged_edges[-1] != edges[-1]:
        merged_edges.append(edges[-1])
    shares: dict[str, list[float]] = {}
    for name, c in counts.items():
        total = sum(c) or 1
        shares[name] = [sum(c[i : i + group]) / total for i in range(0, n, group)]
    used = [i for i in range(len(merged_edges) - 1) if any(s[i] > 0 for s in shares.values())]
    lo_i, hi_i = (used[0], used[-1] + 1) if used else (0, len(merged_edges) - 1)
    lo_i = max(lo_i - 1, 0)
    hi_i = min(hi_i + 1, len(merged_edges) - 1)
    y_hi = max((v for s in shares.values() for v in s[lo_i:hi_i]), default=1.0) * 1.1
    frame = _Frame(merged_edges[lo_i], merged_edges[hi_i], 0.0, y_hi or 1.0)
    parts = frame.axes(title, x_label, "share of patients")
    for k, s in enumerate(shares.values()):
        colour = PALETTE[k % len(PALETTE)]
        pts = [f"{frame.x(merged_edges[lo_i]):.1f},{frame.y(0):.1f}"]
        for i in range(lo_i, hi_i):
            y = frame.y(s[i])
            pts.append(f"{frame.x(merged_edges[i]):.1f},{y:.1f}")
            pts.append(f"{frame.x(merged_edges[i + 1]):.1f},{y:.1f}")
        pts.append(f"{frame.x(merged_edges[hi_i]):.1f},{frame.y(0):.1f}")
        parts.append(
            f'<polyline points="{" ".join(pts)}" fill="{colour}" fill-opacity="0.12" '
            f'stroke="{colour}" stroke-width="1.4"/>'
        )
    parts += _legend(list(shares))
    return _svg(parts, title)
