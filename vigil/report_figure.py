"""The report's picture: sensors, normalised score and flags over time, as a PNG.

One small panel per shown sensor, a score panel (score / threshold against the 1.0 line;
log scale when the peaks dwarf the typical score), and a strip with one lane of flagged
stretches and, when the data has labels, one of labelled events. Flagged stretches are
also shaded across every panel; the score panel numbers them as in the alert table (the
highest peaks first, as many as fit without overlapping). Lines are drawn from the min
and max of each of about BUCKETS row buckets (minmax_indices), so a million-row file
draws as fast as a small one and no spike is lost; flagged stretches and events are
drawn exactly, one rectangle each.

Drawn on a matplotlib Figure with the Agg canvas directly: no pyplot, so no global
figure state and no backend switch.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from vigil.report import Report

BUCKETS = 1000  # per line: about one per horizontal pixel of the plot area
WIDTH_INCHES, DPI = 12.0, 100
TOP_INCHES, SENSOR_INCHES, SCORE_INCHES, LANE_INCHES, BOTTOM_INCHES = 0.9, 0.85, 2.4, 0.3, 0.6
LOG_RATIO = 50.0  # log score axis when the peak is this many times the median score
FLAG_COLOR, EVENT_COLOR, LINE_COLOR, SCORE_COLOR = "tab:red", "tab:purple", "tab:blue", "black"
NUMBER_LEVELS = (0.93, 0.81, 0.69)  # heights (axes fraction) for alert numbers, tried in order
MAX_NUMBERS = 30  # more would hide the score


def minmax_indices(values: np.ndarray, buckets: int = BUCKETS) -> np.ndarray:
    """Rows to draw so that every bucket's extremes survive.

    values: [rows, k]. The rows are cut into at most `buckets` runs of equal length; of
    each run, the rows holding the smallest and the largest value of each column are
    kept (NaN is neither; a run of NaNs keeps one NaN row, which draws as a gap).
    Returns int64 [m, k]: for each column, m ascending row indices; all rows when
    rows <= 2 * buckets.
    """
    rows, k = values.shape
    if rows <= 2 * buckets:
        return np.repeat(np.arange(rows, dtype=np.int64)[:, None], k, axis=1)
    size = -(-rows // buckets)
    count = -(-rows // size)  # every run starts on a real row; the last is padded with NaN
    padded = np.full((count * size, k), np.nan, values.dtype)
    padded[:rows] = values
    padded = padded.reshape(count, size, k)
    nan = np.isnan(padded)
    low = np.argmin(np.where(nan, np.inf, padded), axis=1)
    high = np.argmax(np.where(nan, -np.inf, padded), axis=1)
    pair = np.stack([np.minimum(low, high), np.maximum(low, high)], axis=1)  # [count, 2, k]
    return (pair + (np.arange(count, dtype=np.int64) * size)[:, None, None]).reshape(2 * count, k)


def render_png(report: Report) -> bytes:
    """The report's picture as PNG bytes."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    x = report.table.time / 86400.0 + mdates.date2num(np.datetime64("1970-01-01T00:00:00"))  # date numbers
    lanes = 1 if report.table.labels is None else 2
    panels = len(report.shown)
    height = TOP_INCHES + panels * SENSOR_INCHES + SCORE_INCHES + lanes * LANE_INCHES + BOTTOM_INCHES
    fig = Figure(figsize=(WIDTH_INCHES, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(panels + 2, 1, sharex=True, gridspec_kw={
        "height_ratios": [SENSOR_INCHES] * panels + [SCORE_INCHES, lanes * LANE_INCHES]})
    axes[-1].set_xlim(x[0], x[-1] if x[-1] > x[0] else x[0] + 1 / 86400)
    flagged = _spans(x, [(a.start, a.stop) for a in report.alerts])
    _draw_sensors(axes[:panels], report, x, flagged)
    numbered = _draw_score(axes[panels], report, x, flagged)
    _draw_strip(axes[-1], report, x, flagged)
    fig.legend(handles=_legend(report), loc="outside lower center", ncols=4, fontsize=9, frameon=False)
    fig.suptitle(_title(report, numbered), fontsize=11)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def _draw_sensors(axes, report: Report, x: np.ndarray, flagged: list[tuple[float, float]]) -> None:
    values = report.table.select(report.shown)
    index = minmax_indices(values)
    for j, (ax, name) in enumerate(zip(axes, report.shown)):
        ax.plot(x[index[:, j]], values[index[:, j], j], color=LINE_COLOR, linewidth=0.7)
        ax.text(0.004, 0.92, _plain(name), transform=ax.transAxes, va="top", ha="left", fontsize=9,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.9, "pad": 1.5})
        _shade(ax, flagged)
        ax.tick_params(labelsize=7)


def _draw_score(ax, report: Report, x: np.ndarray, flagged: list[tuple[float, float]]) -> int:
    """The normalised score panel; returns how many alerts got their number written."""
    normalized = report.scores.normalized
    index = minmax_indices(normalized[:, None])[:, 0]
    ax.plot(x[index], normalized[index], color=SCORE_COLOR, linewidth=0.7)
    ax.axhline(1.0, color=FLAG_COLOR, linestyle="--", linewidth=1.0)
    _score_scale(ax, normalized)
    ax.set_ylabel("score / threshold", fontsize=9)
    ax.tick_params(labelsize=7)
    _shade(ax, flagged)
    return _number_alerts(ax, report, x)


def _draw_strip(ax, report: Report, x: np.ndarray, flagged: list[tuple[float, float]]) -> None:
    """Lanes of flagged stretches and (with labels) labelled events, and the time axis."""
    import matplotlib.dates as mdates

    names = ["flagged"]
    if report.table.labels is not None:
        ax.broken_barh(_spans(x, report.events), (0.15, 0.7), facecolors="none", edgecolors=EVENT_COLOR,
                       hatch="////", linewidth=0.8)
        names.insert(0, "labelled")
    ax.broken_barh(flagged, (len(names) - 1 + 0.15, 0.7), facecolors=FLAG_COLOR, edgecolors=FLAG_COLOR,
                   linewidth=0.5)
    ax.set_ylim(0, len(names))
    ax.set_yticks(np.arange(len(names)) + 0.5, names, fontsize=8)
    ax.tick_params(axis="y", length=0)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.tick_params(axis="x", labelsize=8)


def _legend(report: Report) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Line2D([], [], color=SCORE_COLOR, label="score / threshold"),
        Line2D([], [], color=FLAG_COLOR, linestyle="--",
               label=f"threshold = 1 (score {report.model.threshold.value:.4g})"),
        Patch(facecolor=FLAG_COLOR, alpha=0.18, label="flagged, with its alert number"),
    ]
    if report.table.labels is not None:
        handles.append(Patch(facecolor="none", edgecolor=EVENT_COLOR, hatch="////", label="labelled event"))
    return handles


def _spans(x: np.ndarray, runs) -> list[tuple[float, float]]:
    """Row runs [start, stop) -> (x, width) pairs reaching to the next row's time."""
    last = len(x) - 1
    return [(x[lo], x[min(hi, last)] - x[lo]) for lo, hi in runs]


def _shade(ax, spans: list[tuple[float, float]]) -> None:
    """Shade spans over the panel's full height, exactly (hairline edges keep short ones visible)."""
    if spans:
        ax.broken_barh(spans, (0, 1), transform=ax.get_xaxis_transform(), facecolors=FLAG_COLOR,
                       edgecolors=FLAG_COLOR, alpha=0.18, linewidth=0.5)


def _score_scale(ax, normalized: np.ndarray) -> None:
    finite = normalized[np.isfinite(normalized) & (normalized > 0)]
    if finite.size and finite.max() > LOG_RATIO * np.median(finite):
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.set_ylim(bottom=max(finite.min(), finite.max() * 1e-4))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def _number_alerts(ax, report: Report, x: np.ndarray) -> int:
    """Write alert numbers above their stretches, highest peaks first, staggered on
    NUMBER_LEVELS so that none overlap, at most MAX_NUMBERS; returns how many were written."""
    lo, hi = ax.get_xlim()
    width = (hi - lo) or 1.0
    taken: list[list[tuple[float, float]]] = [[] for _ in NUMBER_LEVELS]  # per level: (left, right), axes fraction
    written = 0
    for a in sorted(report.alerts, key=lambda a: -a.peak_normalized):
        if written == MAX_NUMBERS:
            break
        centre = (x[a.start] + x[a.stop - 1]) / 2
        pos = (centre - lo) / width
        half = 0.004 * (len(str(a.number)) + 1)
        level = next((i for i, spans in enumerate(taken)
                      if all(pos + half < left or pos - half > right for left, right in spans)), None)
        if level is None:
            continue
        taken[level].append((pos - half - 0.002, pos + half + 0.002))
        written += 1
        ax.text(centre, NUMBER_LEVELS[level], str(a.number), transform=ax.get_xaxis_transform(),
                ha="center", va="center", fontsize=8, color="darkred",
                bbox={"facecolor": "white", "edgecolor": FLAG_COLOR, "linewidth": 0.5, "pad": 1.2, "alpha": 0.85})
    return written


def _title(report: Report, numbered: int) -> str:
    model = report.model
    lines = [f"{Path(report.table.path).name}: {len(report.alerts)} alert(s), "
             f"model {model.version or '(no version)'}"]
    notes = [report.sensors_note] if report.sensors_note else []
    if numbered < len(report.alerts):
        notes.append(f"numbered: the {numbered} highest-peaking alerts with room for a label")
    if notes:
        lines.append("; ".join(notes))
    return _plain("\n".join(lines))


def _plain(text: str) -> str:
    """Text for matplotlib with '$' shown as is instead of starting math mode."""
    return text.replace("$", r"\$")
