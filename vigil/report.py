"""`vigil report`: what a model makes of one sensor file, as a picture and a table.

The picture (vigil.report_figure) shows the sensors, the normalised score against the
threshold, the flagged stretches and the labelled events; the alert table lists each
flagged run (the model's flags, persistence rule included) with its peak and the sensors
that drove it. `.html` output is one self-contained file: the PNG embedded as a data URI,
no scripts, no external assets, every text escaped. `.png` output is the picture alone.
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from detector.artifact import TrainedModel
from detector.table import SensorTable
from detector.offline import TableScores, score_table
from detector.scoring import top_sensors
from training.evaluation import evaluate, runs

__all__ = ["Alert", "Report", "ReportError", "build_report", "check_format", "find_alerts", "parse_time",
           "render_html", "top_contributors", "write_report"]

FORMATS = (".html", ".png")
MAX_PLOTTED_SENSORS = 12
MAX_TABLE_ROWS = 500


class ReportError(ValueError):
    """A report that cannot be made as asked (output format, time range); says why."""


@dataclass(frozen=True)
class Alert:
    """One flagged run: rows [start, stop) of the report's rows, the row of its highest
    normalised score (peak), that score, and the top sensors there as (name, share)."""

    number: int
    start: int
    stop: int
    peak: int
    peak_normalized: float
    top: list[tuple[str, float]]


@dataclass(frozen=True)
class Report:
    """A model's view of some rows of one table: what the figure and the HTML show.

    table, scores: the reported rows only (scored with the rows before them as context).
    events: int64 [k, 2] runs of labelled rows (start, stop), empty without labels.
    shown: the sensors to plot, at most MAX_PLOTTED_SENSORS.
    metrics: training.evaluation.evaluate() of the rows, or None without labels.
    """

    model: TrainedModel
    table: SensorTable
    scores: TableScores
    alerts: list[Alert]
    events: np.ndarray
    shown: tuple[str, ...]
    metrics: dict | None

    @property
    def sensors_note(self) -> str:
        """'' when every sensor is shown, else which ones are and why."""
        total = len(self.model.sensors)
        if len(self.shown) == total:
            return ""
        where = "flagged rows" if self.scores.flags.any() else "all rows"
        return f"{len(self.shown)} of {total} sensors shown: those contributing most to the score in {where}"


def parse_time(text: str) -> float:
    """A --from/--to bound: ISO 8601 (naive = UTC) or epoch seconds -> epoch seconds."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            raise ReportError(f"not an ISO 8601 time or epoch seconds: {text!r}") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)
        seconds = stamp.timestamp()
    if not math.isfinite(seconds):
        raise ReportError(f"not a finite time: {text!r}")
    return seconds


def check_format(out: str | os.PathLike) -> str:
    """The output format of a report path ('.html' or '.png'), or a ReportError."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise ReportError(f"{out}: unsupported report format {suffix or '(no extension)'!r}; "
                          f"name the output *.html (a page with the alert table) or *.png (the picture only)")
    return suffix


def build_report(model: TrainedModel, table: SensorTable, start: float | None = None,
                 end: float | None = None) -> Report:
    """Score a table with a model and gather the report of its rows with start <= time <= end
    (epoch seconds; None = unbounded). Rows before `start` are scored as context, so the
    first reported row has its full window and persistence state."""
    lo = 0 if start is None else int(np.searchsorted(table.time, start, "left"))
    hi = table.rows if end is None else int(np.searchsorted(table.time, end, "right"))
    if hi <= lo:
        span = f"{table.time_raw[0]} to {table.time_raw[-1]}" if table.rows else "no rows"
        raise ReportError(f"{table.path}: no rows in the time range asked for (the file covers {span})")
    first = max(lo - (model.config.window - 1) - (model.persistence.n - 1), 0)
    scores = score_table(model, _rows(table, first, hi))
    if lo > first:
        scores = TableScores(*(a[lo - first:] for a in (scores.score, scores.normalized, scores.flags,
                                                        scores.contributions)))
    table = _rows(table, lo, hi)
    metrics = None if table.labels is None else evaluate(table.labels, scores.normalized, scores.flags,
                                                         timestamps=table.time)
    events = runs(table.labels) if table.labels is not None else np.empty((0, 2), np.int64)
    return Report(model, table, scores, find_alerts(scores, model.sensors), events,
                  top_contributors(scores, model.sensors), metrics)


def _rows(table: SensorTable, lo: int, hi: int) -> SensorTable:
    """Rows [lo, hi) of a table (the table itself when that is all of it)."""
    if (lo, hi) == (0, table.rows):
        return table
    return SensorTable(table.path, table.time_raw[lo:hi], table.time[lo:hi], table.sensors,
                       table.values[lo:hi], None if table.labels is None else table.labels[lo:hi])


def find_alerts(scores: TableScores, sensors: tuple[str, ...]) -> list[Alert]:
    """The flagged runs of scored rows, numbered from 1, each with its peak and top 3 sensors."""
    spans = runs(scores.flags)
    ranked = np.where(np.isnan(scores.normalized), -np.inf, scores.normalized)
    peaks = np.array([lo + int(np.argmax(ranked[lo:hi])) for lo, hi in spans], np.int64)
    tops = top_sensors(scores.contributions[peaks], scores.score[peaks], sensors) if len(peaks) else []
    return [Alert(i + 1, int(lo), int(hi), int(p), float(scores.normalized[p]), top)
            for i, ((lo, hi), p, top) in enumerate(zip(spans, peaks, tops))]


def top_contributors(scores: TableScores, sensors: tuple[str, ...],
                     limit: int = MAX_PLOTTED_SENSORS) -> tuple[str, ...]:
    """The sensors to plot: all of them in model order, or the `limit` largest contributors
    to the score (summed over flagged rows, else over all rows), largest first."""
    if len(sensors) <= limit:
        return sensors
    rows = scores.flags if scores.flags.any() else slice(None)
    total = scores.contributions[rows].sum(axis=0)
    order = np.argsort(-total, kind="stable")[:limit]
    return tuple(sensors[i] for i in order)


def write_report(report: Report, out: str | os.PathLike) -> None:
    """Write the report as *.html or *.png; the file appears under its name only when complete."""
    from vigil.report_figure import render_png

    png = render_png(report)
    data = png if check_format(out) == ".png" else render_html(report, png).encode()
    tmp = f"{out}.tmp"
    Path(tmp).write_bytes(data)
    os.replace(tmp, out)


# ----------------------------------------------------------------------------- HTML

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 1.5em auto; max-width: 1240px; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts th { background: none; font-weight: 600; }
img { max-width: 100%; border: 1px solid #ddd; }
p.note { color: #555; }
"""


def render_html(report: Report, png: bytes) -> str:
    """The report page: facts, the picture (embedded), the alert table."""
    e = html.escape
    name = Path(report.table.path).name
    image = base64.b64encode(png).decode("ascii")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Vigil report: {e(name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Vigil report: {e(name)}</h1>",
        _facts(report),
    ]
    if report.metrics is not None:
        m = report.metrics
        parts.append(f"<p>Labelled events: {m['events']}, detected: {m['events_detected']}, "
                     f"false-alarm episodes: {m['false_alarm_episodes']}.</p>")
    if report.sensors_note:
        parts.append(f'<p class="note">{e(report.sensors_note)}.</p>')
    parts.append(f'<p><img src="data:image/png;base64,{image}" alt="{e(_alt_text(report))}"></p>')
    parts.append(_alert_table(report))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _facts(report: Report) -> str:
    model, table, scores = report.model, report.table, report.scores
    t = model.threshold
    rows = [
        ("model", f"{model.version or '(no version)'}, window {model.config.window}"),
        ("sensors", f"{len(model.sensors)}: {', '.join(model.sensors)}"),
        ("threshold", f"{t.value:.6g} ({t.method}); flagged when {model.persistence.k} of the last "
                      f"{model.persistence.n} windows are over it"),
        ("data", table.path),
        ("rows", f"{table.rows} ({table.time_raw[0]} to {table.time_raw[-1]})"),
        ("flagged rows", f"{int(np.count_nonzero(scores.flags))} in {len(report.alerts)} alert(s)"),
    ]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{cells}</table>'


def _alt_text(report: Report) -> str:
    return (f"Sensors, normalised score against the threshold, {len(report.alerts)} flagged stretch(es) "
            f"and {len(report.events)} labelled event(s) over time")


def _alert_table(report: Report) -> str:
    e = html.escape
    alerts = report.alerts
    if not alerts:
        return "<h2>Alerts</h2>\n<p>No rows were flagged.</p>"
    times = report.table.time_raw
    lines = ["<h2>Alerts</h2>"]
    if len(alerts) > MAX_TABLE_ROWS:
        lines.append(f'<p class="note">The first {MAX_TABLE_ROWS} of {len(alerts)} alerts.</p>')
    lines.append("<table><thead><tr><th>#</th><th>from</th><th>to</th><th>rows</th>"
                 "<th>peak score / threshold</th><th>top sensors at the peak</th></tr></thead><tbody>")
    for a in alerts[:MAX_TABLE_ROWS]:
        top = ", ".join(f"{e(name)} {share:.0%}" for name, share in a.top)
        lines.append(f'<tr><td class="num">{a.number}</td><td>{e(times[a.start])}</td>'
                     f'<td>{e(times[a.stop - 1])}</td><td class="num">{a.stop - a.start}</td>'
                     f'<td class="num">{a.peak_normalized:.2f}</td><td>{top}</td></tr>')
    lines.append("</tbody></table>")
    return "\n".join(lines)
