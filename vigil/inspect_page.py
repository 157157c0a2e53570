"""`vigil inspect --html`: a data-quality report as one self-contained page.

The page has the files' facts, a table of findings (severity, file, column, lines, times,
verdict) and, per file, a small plot of every sensor with what the findings point at:
the longest flat-lined stretch and the longest missing run shaded, gaps in the time axis
shaded grey, outlier fences dashed and outliers dotted. As in `vigil report`
(vigil/report.py), the PNGs are embedded as data URIs, there are no scripts or external
assets, every text is escaped, and lines are drawn from the min and max of row buckets
(vigil.report_figure.minmax_indices) so a million rows draw as fast as a thousand.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detector.table import SensorTable
from detector.sampling import GAP_FACTOR
from training.dataquality import EPOCH_YEAR, WARNING, FileQuality, Finding, QualityReport, SensorQuality
from vigil.report_figure import minmax_indices

__all__ = ["render_html", "render_sensor_png", "write_page"]

MAX_PLOTTED_FILES = 20  # a directory of many files: the first ones are plotted, every finding is listed
MAX_MARKED = 2000  # outlier dots per plot
WIDTH_INCHES, HEIGHT_INCHES, DPI = 10.0, 1.4, 90
LINE_COLOR, FLAT_COLOR, MISSING_COLOR, GAP_COLOR, OUTLIER_COLOR, LABEL_COLOR = (
    "tab:blue", "tab:orange", "tab:purple", "0.6", "tab:red", "tab:pink")
LEGEND = ("In the plots: grey, gaps in time; purple, missing readings; orange, the longest flat-lined stretch "
          "(when a window long); red dots and dashed lines, outliers and their fences; pink, rows labelled anomalous.")

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 1.5em auto; max-width: 1240px; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; } h3 { font-size: 1em; margin: 1em 0 0.2em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
table.facts th { background: none; font-weight: 600; }
td.warning { color: #a40000; font-weight: 600; } td.note { color: #555; }
img { max-width: 100%; border: 1px solid #ddd; }
p.note, span.stats { color: #555; }
"""


def write_page(report: QualityReport, tables: Sequence[SensorTable], out: str | os.PathLike) -> None:
    """Write the page; it appears under its name only when complete."""
    tmp = f"{out}.tmp"
    Path(tmp).write_text(render_html(report, tables), encoding="utf-8")
    os.replace(tmp, out)


def render_html(report: QualityReport, tables: Sequence[SensorTable]) -> str:
    """The page: facts per file, the findings table, a plot per sensor (tables: as inspected)."""
    e = html.escape
    names = sorted({Path(f.path).name for f in report.files})
    title = f"Vigil data quality: {names[0]}" if len(names) == 1 else f"Vigil data quality: {len(names)} files"
    w, n = len(report.warnings), len(report.notes)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>", f"<h1>{e(title)}</h1>",
             _facts(report), f"<h2>Findings: {w} warning{'s' if w != 1 else ''}, {n} note{'s' if n != 1 else ''}</h2>",
             _findings_table(report.findings)]
    for i, (quality, table) in enumerate(zip(report.files, tables)):
        if i == MAX_PLOTTED_FILES:
            parts.append(f'<p class="note">Plots of the first {MAX_PLOTTED_FILES} of {len(report.files)} files '
                         f"only; the findings above cover them all.</p>")
            break
        parts.append(_file_section(quality, table, [f for f in report.findings if f.path == quality.path],
                                   report.window))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _facts(report: QualityReport) -> str:
    rows = []
    for f in report.files:
        about = f"{f.rows:,} rows, {len(f.sensors)} sensors, {f.time_start} to {f.time_end}; sampling interval " \
                f"{f.sampling.describe()}"
        if f.duplicate_times or f.backward_times:
            about += f"; left out for their time: {f.duplicate_times:,} duplicate, {f.backward_times:,} stepping back"
        if f.labelled_rows:
            about += f"; {f.labelled_rows:,} rows labelled anomalous"
        rows.append((f.path, about))
    verdict = "enough" if report.enough_windows else "too few"
    rows.append((f"windows of {report.window}", f"{report.windows:,} of normal data ({verdict}; at least "
                                                f"{report.windows_needed:,} wanted)"))
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{cells}</table>'


def _findings_table(findings: Sequence[Finding]) -> str:
    if not findings:
        return "<p>Nothing to report: no warnings, no notes.</p>"
    e = html.escape
    lines = ["<table><thead><tr><th>severity</th><th>file</th><th>column</th><th>lines</th><th>times</th>"
             "<th>verdict</th></tr></thead><tbody>"]
    for f in findings:
        where = "" if f.lines is None else str(f.lines[0]) if f.lines[0] == f.lines[1] else f"{f.lines[0]}-{f.lines[1]}"
        when = "" if f.times is None else f.times[0] if f.times[0] == f.times[1] else f"{f.times[0]} to {f.times[1]}"
        file = Path(f.path).name if f.path else "all"
        lines.append(f'<tr><td class="{e(f.severity)}">{e(f.severity)}</td><td>{e(file)}</td>'
                     f"<td>{e(f.column or '')}</td><td>{e(where)}</td><td>{e(when)}</td><td>{e(f.message)}</td></tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _file_section(quality: FileQuality, table: SensorTable, findings: list[Finding], window: int) -> str:
    e = html.escape
    parts = [f"<h2>{e(quality.path)}</h2>", f'<p class="note">{e(LEGEND)}</p>']
    for j, sensor in enumerate(quality.sensors):
        own = [f for f in findings if f.column == sensor.name]
        warnings = sum(f.severity == WARNING for f in own)
        verdict = (f"{warnings} warning(s), {len(own) - warnings} note(s)" if own else "no findings")
        png = base64.b64encode(render_sensor_png(table, j, sensor, quality, window)).decode("ascii")
        parts.append(f"<h3>{e(sensor.name)} <span class=\"stats\">({e(verdict)}; {e(_stats(sensor))})</span></h3>")
        parts.append(f'<p><img src="data:image/png;base64,{png}" alt="{e(sensor.name)} over time"></p>')
    return "\n".join(parts)


def _stats(s: SensorQuality) -> str:
    if s.observed == 0:
        return "no readings"
    text = f"min {s.minimum:.6g}, median {s.median:.6g}, max {s.maximum:.6g}" if s.median is not None else \
        f"min {s.minimum:.6g}, max {s.maximum:.6g}"
    if s.missing_share:
        text += f", {s.missing_share:.1%} missing"
    if s.values is not None:
        text += f", {len(s.values)} distinct value(s)"
    return text


def render_sensor_png(table: SensorTable, j: int, sensor: SensorQuality, quality: FileQuality,
                      window: int) -> bytes:
    """A small plot of sensor j of a table: its readings, the gaps in time (grey), missing readings
    (purple), its longest flat-lined stretch when a window long (orange), outliers and their fences (red)."""
    from matplotlib.figure import Figure

    steps = len(table.time) and table.time[-1] < EPOCH_YEAR  # sample counts: plain numbers, not 1970 dates
    x = table.time if steps else table.time / 86400.0 + _epoch_datenum()
    y = table.values[:, j]
    fig = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI)
    fig.subplots_adjust(left=0.07, right=0.995, top=0.95, bottom=0.3)
    ax = fig.add_subplot()
    if len(x):
        index = minmax_indices(y[:, None])[:, 0]
        ax.plot(x[index], y[index], color=LINE_COLOR, linewidth=0.7)
        ax.set_xlim(x[0], x[-1] if x[-1] > x[0] else x[0] + 1)
        _shade_gaps(ax, table, x, quality)
        if sensor.longest_flat >= window and sensor.values is None:
            a, b = sensor.flat_start, sensor.flat_start + sensor.longest_flat - 1
            ax.axvspan(x[a], x[b], color=FLAT_COLOR, alpha=0.3, linewidth=0)
        _shade(ax, x, np.isnan(y), MISSING_COLOR)
        if table.labels is not None:
            _shade(ax, x, table.labels.astype(bool), LABEL_COLOR)
        if sensor.fences is not None and sensor.outliers:
            low, high = sensor.fences
            with np.errstate(invalid="ignore"):
                far = np.flatnonzero((y < low) | (y > high))[:MAX_MARKED]
            ax.plot(x[far], y[far], "o", color=OUTLIER_COLOR, markersize=2.5)
            for fence, side in zip(sensor.fences, (y[far] < low, y[far] > high)):
                if side.any():  # the fence that was crossed (the other would only stretch the axis)
                    ax.axhline(fence, color=OUTLIER_COLOR, linestyle="--", linewidth=0.6)
    ax.tick_params(labelsize=7)
    if not steps:
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def _shade(ax, x: np.ndarray, mask: np.ndarray, color: str) -> None:
    """Shade the runs of True in mask [rows] over the panel's height, to the next row's time."""
    edges = np.diff(np.concatenate([[False], mask, [False]]).view(np.int8))
    start, stop = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if len(start):
        stop = np.minimum(stop, len(x) - 1)
        ax.broken_barh(list(zip(x[start], np.maximum(x[stop] - x[start], 0))), (0, 1),
                       transform=ax.get_xaxis_transform(), facecolors=color, alpha=0.3, linewidth=0)


def _shade_gaps(ax, table: SensorTable, x: np.ndarray, quality: FileQuality) -> None:
    interval = quality.sampling.interval_seconds
    if interval is None:
        return
    gaps = np.flatnonzero(np.diff(table.time) > GAP_FACTOR * interval)
    if len(gaps):
        ax.broken_barh(list(zip(x[gaps], x[gaps + 1] - x[gaps])), (0, 1), transform=ax.get_xaxis_transform(),
                       facecolors=GAP_COLOR, alpha=0.35, linewidth=0)


def _epoch_datenum() -> float:
    import matplotlib.dates as mdates

    return float(mdates.date2num(np.datetime64("1970-01-01T00:00:00")))
