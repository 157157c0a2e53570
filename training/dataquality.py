"""Data quality of sensor files before training: what `vigil inspect` reports and `vigil train` warns about.

`inspect_tables(tables, window=..., validation_fraction=..., init_quantile=...)` looks at
SensorTables (as detector.csvdata reads them) and returns a QualityReport: per file its
rows, sampling and windows, per sensor a few statistics, and a list of Findings, each a
one-line verdict with a severity ("warning": likely to hurt the model or its threshold;
"note": worth knowing), the file, the column and the lines and times concerned. Nothing
here prints; `format_text` and `QualityReport.to_dict` render a report.

Checks, per sensor (thresholds are the module constants below):
- missing: the share of empty cells, the longest run of them;
- constant: one value in every reading;
- flat-lined: the longest run of one repeated value, when it is at least a window long
  (a stuck sensor in training data teaches the model that stuck is normal);
- held: most readings repeat the one before, in runs shorter than a window (a sensor
  sampled more slowly than the file, like the analysers in TEP);
- categorical: at most MAX_CATEGORIES distinct values (binary states, valve positions);
- outliers: readings beyond the 1-99 % range of the sensor by more than OUTLIER_FACTOR
  times that range's width: quantiles, so the bulk's own spread sets the scale;
- counter: rises (or falls) over nearly every step it moves, in many steps: a counter or
  a trend, whose later values the model has never seen;
- unseen: at least UNSEEN_SHARE of the validation part's readings (the file's last
  validation_fraction, as training splits it: training.config.validation_start) lie outside
  the range the training part before it saw, widened by UNSEEN_MARGIN of its width: the
  sensor's error scale and the threshold are set on values the model never learned. A
  sensor constant in training that moves in validation holds a model's threshold far up
  (SMD's machine-1-3: metric 4, and its training stops after two epochs, the validation
  loss rising from there); one that drifts (SKAB's thermocouple) alarms later.
For the data as a whole: an off state (suggest_off_condition): rows where several sensors
read near zero at once, clearly apart from the running rows, when no off condition is given.
Per file: the sampling interval and its jitter (detector.sampling), gaps, rows left out
because their time was a duplicate or stepped back (table.skipped), rows labelled
anomalous, times that look like sample counts, and the windows of normal data.

Enough windows: the threshold is calibrated on the validation windows (the last
validation_fraction of every file) by a GPD fit to the scores above their init_quantile
(0.98); detector.threshold.MIN_PEAKS (10) peaks is the least it fits on, so it needs
MIN_PEAKS / (1 - init_quantile) = 500 validation windows to fit the tail where it is meant
to start, and fewer lower that starting point (a threshold extrapolated from the middle
of the distribution). With the default split that is 500 / 0.25 = 2,000 windows of normal
data (about 2,000 rows per file plus a window): the least, not a target, since
overlapping windows are far from independent (2,000 rows hold 33 disjoint windows of 60).

Line numbers are file lines (the header is line 1) of a file whose rows are one line
each: a table row's line counts the rows left out for their time before it.
Speed: it runs on every `vigil train`, so it is numpy over whole contiguous columns (quantiles
and distinct values on a strided sample of SAMPLE_ROWS rows), Python only per sensor and per
finding: 0.1 s for 1,000,000 rows x 7 sensors, 6-8 % of the time reading the file takes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from detector.table import SensorTable
from detector.sampling import GAP_FACTOR, JITTER_TOLERANCE, Sampling, duration, infer_sampling
from detector.threshold import MIN_PEAKS
from training.config import validation_start

__all__ = ["FileQuality", "Finding", "QualityReport", "SensorQuality", "format_text", "inspect_tables",
           "windows_needed"]

WARNING, NOTE = "warning", "note"
MISSING_WARNING = 0.05  # a sensor missing in this share of rows (or for a window on end) is a warning
MAX_CATEGORIES = 10  # at most this many distinct values: a categorical-looking channel
MIN_READINGS = 50  # fewer readings than this: no categorical, outlier, counter or held verdict
HELD_SHARE = 0.5  # a sensor repeating its previous reading this often is held (sampled slower)
OUTLIER_FACTOR = 2.0  # outliers lie beyond the 1-99 % range by this many times its width
OUTLIER_QUANTILES = (0.01, 0.5, 0.99)
COUNTER_BACKSTEPS = 0.01  # a counter moves against its direction in at most this share of its moves
COUNTER_MIN_STEPS = 20  # ... and moves in at least this many steps (and MIN_STEP_SHARE of them)
COUNTER_MIN_STEP_SHARE = 0.01
UNSEEN_SHARE = 0.05  # unseen: this share of the validation part's readings outside the training part's range ...
UNSEEN_MARGIN = 0.1  # ... widened on each side by this fraction of its width
JITTER_NOTE = 0.01  # timestamps jittered in this share of spacings are a note
SAMPLE_ROWS = 1 << 16  # quantiles and distinct values are estimated on about this many rows
EPOCH_YEAR = 365 * 86400.0  # times all inside 1970: step counts read as epoch seconds
OFF_NEAR_ZERO = 0.1  # off state: a sensor under this fraction of its typical (median) magnitude ...
OFF_MIN_SENSORS = 2  # ... in at least this many sensors at once
OFF_SHARE = (0.005, 0.5)  # ... in this share of the rows
OFF_COVERAGE = 0.9  # the suggested sensor is near zero in this share of those rows
OFF_RUNNING = 0.5  # and its running rows stay above this fraction of its typical magnitude (1 % quantile)
SHOWN_PER_KIND = 3  # the text report prints this many findings of one kind; one line sums up the rest


@dataclass(frozen=True)
class Finding:
    """One problem, as a one-line verdict.

    check: which check found it (missing, constant, flatline, held, categorical, outliers,
    counter, unseen, gaps, jitter, duplicate_times, backward_times, labelled, step_times,
    short_file, windows, off_state).
    path: the file (None: the data as a whole); column: the sensor (None: the file or its
    timestamps); lines: first and last file line concerned (unit "line"; a Parquet file's
    data rows, from 1: unit "row"); times: their time cells.
    """

    severity: str
    check: str
    path: str | None
    column: str | None
    message: str
    lines: tuple[int, int] | None = None
    times: tuple[str, str] | None = None
    unit: str = "line"

    def describe(self) -> str:
        """'warning: pump.csv, column 'pressure', lines 1202-1562: flat at 3.2 for 361 readings ...'."""
        where = [self.path or "all files"]
        if self.column is not None:
            where.append(f"column {self.column!r}")
        if self.lines is not None:
            a, b = self.lines
            where.append(f"{self.unit} {a}" if a == b else f"{self.unit}s {a}-{b}")
        return f"{self.severity}: {', '.join(where)}: {self.message}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lines"] = None if self.lines is None else list(self.lines)
        d["times"] = None if self.times is None else list(self.times)
        return d


@dataclass(frozen=True)
class SensorQuality:
    """Statistics of one sensor in one file. values: its distinct values when there are at
    most MAX_CATEGORIES, else None. longest_flat: the longest run of one repeated value, in
    readings, starting at table row flat_start. outliers: readings beyond the fences."""

    name: str
    observed: int
    missing_share: float
    minimum: float | None
    maximum: float | None
    median: float | None
    values: tuple[float, ...] | None
    longest_flat: int
    flat_start: int
    repeat_share: float
    outliers: int
    fences: tuple[float, float] | None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["values"] = None if self.values is None else list(self.values)
        d["fences"] = None if self.fences is None else list(self.fences)
        return d


@dataclass(frozen=True)
class FileQuality:
    """One file: rows kept, rows left out for their time (duplicates, steps back), rows
    labelled anomalous, windows of `window` rows holding no labelled row, its sampling."""

    path: str
    rows: int
    time_start: str | None
    time_end: str | None
    sampling: Sampling
    duplicate_times: int
    backward_times: int
    labelled_rows: int
    windows: int
    sensors: tuple[SensorQuality, ...]

    def to_dict(self) -> dict:
        return {"path": self.path, "rows": self.rows, "time_start": self.time_start, "time_end": self.time_end,
                "sampling": self.sampling.to_dict(), "duplicate_times": self.duplicate_times,
                "backward_times": self.backward_times, "labelled_rows": self.labelled_rows,
                "windows": self.windows, "sensors": [s.to_dict() for s in self.sensors]}


@dataclass(frozen=True)
class QualityReport:
    """The whole inspection: window and windows_needed (the rule above), files, findings."""

    window: int
    windows_needed: int
    files: tuple[FileQuality, ...]
    findings: tuple[Finding, ...] = field(default=())

    @property
    def windows(self) -> int:
        return sum(f.windows for f in self.files)

    @property
    def enough_windows(self) -> bool:
        return self.windows >= self.windows_needed

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == NOTE]

    def summary(self) -> dict:
        """What the training report keeps: the counts and the findings, no per-sensor statistics."""
        return {"window": self.window, "windows": self.windows, "windows_needed": self.windows_needed,
                "enough_windows": self.enough_windows, "warnings": len(self.warnings), "notes": len(self.notes),
                "findings": [f.to_dict() for f in self.findings]}

    def to_dict(self) -> dict:
        return self.summary() | {"files": [f.to_dict() for f in self.files]}


def windows_needed(validation_fraction: float, init_quantile: float) -> int:
    """Windows of normal data the threshold calibration wants (see the module docstring)."""
    validation = math.ceil(MIN_PEAKS / (1.0 - init_quantile) - 1e-9)
    return math.ceil(validation / validation_fraction - 1e-9)


@dataclass(frozen=True)
class OffSuggestion:
    """A likely off state in training data: the condition to suggest, the rows it holds for, and
    the sensors near zero in them."""

    condition: str
    rows: int
    total: int
    sensors: tuple[str, ...]

    def describe(self) -> str:
        return (f"{self.rows / self.total:.1%} of the rows ({self.rows:,}) look switched off: "
                f"{', '.join(self.sensors)} near zero at once. A model learns such rows as normal, and every stop "
                f"in service looks like a fault; consider off_condition = {self.condition!r} ([training] in the "
                f"TOML, or --off-condition)")


def suggest_off_condition(tables: Sequence[SensorTable], sensors: Sequence[str] | None = None) -> OffSuggestion | None:
    """An off condition for data with a clear off state (the constants OFF_*), or None."""
    sensors = tuple(sensors or tables[0].sensors)
    present = [t for t in tables if all(s in t.sensors for s in sensors)]
    if not present or not sensors:
        return None
    x = np.concatenate([t.select(sensors)[::max(1, t.rows // SAMPLE_ROWS)] for t in present])
    if len(x) < MIN_READINGS:
        return None
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column has no median: no level
        level = np.nanmedian(np.abs(x), axis=0)
        level = np.where(np.isfinite(level), level, 0.0)
        near = (np.abs(x) < OFF_NEAR_ZERO * level) & (level > 0)
    off = near.sum(axis=1) >= OFF_MIN_SENSORS
    if not OFF_SHARE[0] <= off.mean() <= OFF_SHARE[1]:
        return None
    coverage = near[off].mean(axis=0)
    best = None
    for j in np.argsort(-coverage, kind="stable").tolist():
        if coverage[j] < OFF_COVERAGE:
            break
        running = x[~off, j]
        running = running[np.isfinite(running)]
        if running.size and np.quantile(running, 0.01) >= OFF_RUNNING * level[j]:
            best = j
            break
    if best is None:
        return None
    name = sensors[best]
    shown = name if name.replace("_", "a").isalnum() and not name[0].isdigit() else f'"{name}"'
    condition = f"{shown} < {float(f'{2 * OFF_NEAR_ZERO * level[best]:.2g}'):g}"
    scale = sum(t.rows for t in present) / len(x)
    return OffSuggestion(condition, int(round(off.sum() * scale)), sum(t.rows for t in present),
                    tuple(sensors[j] for j in np.flatnonzero(coverage >= OFF_COVERAGE).tolist()))


def inspect_tables(tables: Sequence[SensorTable], *, window: int, validation_fraction: float,
                   init_quantile: float, off_condition: str | None = None) -> QualityReport:
    """Inspect sensor tables for a model with windows of `window` rows, trained with
    `validation_fraction` of each file held out and a POT threshold fitted above
    `init_quantile` (TrainConfig's fields of those names). off_condition: the one given
    (no off state is suggested then)."""
    needed = windows_needed(validation_fraction, init_quantile)
    files, findings = [], []
    for table in tables:
        quality, found = _inspect_file(table, window, validation_fraction)
        files.append(quality)
        findings.extend(found)
    if off_condition is None and tables:
        off = suggest_off_condition(tables)
        if off is not None:
            findings.append(Finding(WARNING, "off_state", tables[0].path if len(tables) == 1 else None, None,
                                    off.describe()))
    total = sum(f.windows for f in files)
    if total < needed:
        rows = sum(f.rows for f in files)
        labelled = sum(f.labelled_rows for f in files)
        normal = " without a labelled row" if labelled else ""
        findings.append(Finding(WARNING, "windows", files[0].path if len(files) == 1 else None, None,
                                f"{total:,} windows of {window} readings{normal} in {_count(rows, 'row')}: too few to "
                                f"train on; at least {needed:,} are wanted (the threshold's tail fit needs "
                                f"{math.ceil(needed * validation_fraction - 1e-9):,} validation windows): use more "
                                "normal history or a smaller --window"))
    return QualityReport(window, needed, tuple(files), tuple(findings))


# ----------------------------------------------------------------------------- one file


class _Rows:
    """Row -> file line and time cell of one table."""

    def __init__(self, table: SensorTable):
        self.path = table.path
        self.time_raw = table.time_raw
        rows = np.arange(table.rows, dtype=np.int64)
        if table.skipped is not None:  # a kept row's data row counts the skipped rows before it
            s = np.asarray(table.skipped.index, np.int64)
            rows = rows + np.searchsorted(s - np.arange(len(s)), rows, side="right")
        parquet = str(table.path).lower().endswith(".parquet")
        self.unit = "row" if parquet else "line"
        self.lines = rows + (1 if parquet else 2)  # a CSV's header is line 1

    def finding(self, severity: str, check: str, column: str | None, message: str,
                first: int | None = None, last: int | None = None) -> Finding:
        if first is None:
            return Finding(severity, check, self.path, column, message)
        last = first if last is None else last
        return Finding(severity, check, self.path, column, message, (int(self.lines[first]), int(self.lines[last])),
                       (self.time_raw[first], self.time_raw[last]), self.unit)


def _inspect_file(table: SensorTable, window: int, validation_fraction: float) -> tuple[FileQuality, list[Finding]]:
    rows = _Rows(table)
    findings: list[Finding] = []
    sampling = infer_sampling([table.time])
    findings += _time_findings(table, rows, sampling, window)
    duplicates, backward = _skipped_findings(table, rows, findings)
    labelled, windows = _labels(table, rows, window, findings)
    split = validation_start(table.rows, window, validation_fraction)
    sensors = _sensor_quality(table, rows, window, split, findings)
    n = table.rows
    quality = FileQuality(table.path, n, table.time_raw[0] if n else None, table.time_raw[-1] if n else None,
                          sampling, duplicates, backward, labelled, windows, sensors)
    return quality, findings


def _time_findings(table: SensorTable, rows: _Rows, sampling: Sampling, window: int) -> list[Finding]:
    found = []
    interval = sampling.interval_seconds
    if table.rows and table.time[-1] < EPOCH_YEAR:
        found.append(rows.finding(NOTE, "step_times", None,
                                  f"times {table.time_raw[0]} to {table.time_raw[-1]} lie inside 1970 as epoch "
                                  f"seconds: if they count samples, the interval "
                                  f"{duration(interval) if interval else '?'} below is one step, not real time"))
    if interval is None:
        return found
    spacing = np.diff(table.time)
    gap = np.flatnonzero(spacing > GAP_FACTOR * interval)
    if len(gap):
        longest = int(gap[np.argmax(spacing[gap])])
        first = int(gap[0])
        span = window * interval
        severity = WARNING if spacing[longest] > span else NOTE
        what = (f"{len(gap):,} gap{'s' if len(gap) > 1 else ''} in the readings (more than {GAP_FACTOR:g} x the "
                f"{duration(interval)} interval), the longest {duration(spacing[longest])} from "
                f"{table.time_raw[longest]} to {table.time_raw[longest + 1]}")
        if first != longest:
            what += (f"; the first on {rows.unit}s {rows.lines[first]}-{rows.lines[first + 1]} "
                     f"({duration(spacing[first])} from {table.time_raw[first]})")
        if severity == WARNING:
            what += f"; longer than a window ({window} readings, {duration(span)}): a window there joins both sides"
        found.append(rows.finding(severity, "gaps", None, what, longest, longest + 1))
    if sampling.jittered >= JITTER_NOTE:
        regular = np.flatnonzero(spacing <= GAP_FACTOR * interval)
        off = np.abs(spacing[regular] - interval)
        worst = int(regular[np.argmax(off)])
        found.append(rows.finding(
            NOTE, "jitter", None,
            f"timestamps jittered: {sampling.jittered:.1%} of spacings are more than {JITTER_TOLERANCE:.0%} off the "
            f"{duration(interval)} interval; the farthest off {duration(float(spacing[worst]))}, from "
            f"{table.time_raw[worst]} to {table.time_raw[worst + 1]}", worst, worst + 1))
    return found


def _skipped_findings(table: SensorTable, rows: _Rows, found: list[Finding]) -> tuple[int, int]:
    """Findings for the rows csvdata left out: duplicate times and steps back. Returns their counts."""
    skipped = table.skipped
    if skipped is None:
        return 0, 0
    # the same time as the newest row before it (however it is written) is a duplicate
    same = skipped.time == table.time[skipped.follows()]
    for kind, mask, what in (("duplicate_times", same, "repeat the time of the row before"),
                             ("backward_times", ~same, "step back in time (a clock set back?)")):
        k = np.flatnonzero(mask)
        if not len(k):
            continue
        first = int(k[0])
        line = int(skipped.lines[first])
        count = f"{len(k):,} row{'s' if len(k) > 1 else ''}"
        found.append(Finding(WARNING, kind, table.path, None,
                             f"{count} {what}, left out (the daemon's rule); the first: {skipped.time_raw[first]!r} "
                             f"after {skipped.newest_raw[first]!r} on {rows.unit} {skipped.newest_lines[first]}",
                             (line, line), (skipped.time_raw[first], skipped.time_raw[first]), rows.unit))
    return int(same.sum()), int((~same).sum())


def _labels(table: SensorTable, rows: _Rows, window: int, found: list[Finding]) -> tuple[int, int]:
    """(rows labelled anomalous, windows without one)."""
    n = table.rows
    labelled = 0
    if table.labels is None or not table.labels.any():
        windows = max(n - window + 1, 0)
    else:
        c = np.concatenate([[0], np.cumsum(table.labels, dtype=np.int64)])
        windows = int(np.count_nonzero(c[window:] == c[:-window])) if n >= window else 0
        labelled = int(c[-1])
        first = int(np.argmax(table.labels))
        found.append(rows.finding(WARNING, "labelled", None,
                                  f"{labelled:,} rows ({labelled / n:.1%}) labelled anomalous, the first at "
                                  f"{table.time_raw[first]}: vigil train takes every row as normal; train on "
                                  "normal history only", first))
    if n < window:
        found.append(rows.finding(WARNING, "short_file", None,
                                  f"{_count(n, 'row')}: shorter than one window ({window} readings); vigil train gets "
                                  "nothing from it"))
    return labelled, windows


# ----------------------------------------------------------------------------- sensors


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of True in a 1-D mask: (start, length) of each, in order."""
    edges = np.diff(np.concatenate([[False], mask, [False]]).view(np.int8))
    start = np.flatnonzero(edges == 1)
    return start, np.flatnonzero(edges == -1) - start


def _quantiles(sample: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Per-row quantiles (linear) of sample [sensors, rows] ignoring NaN: [len(qs), sensors]
    (NaN for a sensor without readings)."""
    ordered = np.sort(sample, axis=1)  # NaN last
    count = sample.shape[1] - np.count_nonzero(np.isnan(sample), axis=1)
    top = np.maximum(count - 1, 0)
    out = np.full((len(qs), sample.shape[0]), np.nan)
    rows = np.arange(sample.shape[0])
    for i, q in enumerate(qs):
        pos = q * top
        lo = np.floor(pos).astype(np.int64)
        a = ordered[rows, lo].astype(np.float64)
        b = ordered[rows, np.minimum(lo + 1, top)].astype(np.float64)
        out[i] = np.where(count > 0, a + (b - a) * (pos - lo), np.nan)
    return out


def _distinct(column: np.ndarray, sample: np.ndarray, limit: int) -> np.ndarray | None:
    """The distinct values of a column when there are at most `limit`, else None. The sample
    (a subset of its rows) rules most columns out at once; the rest are checked in full."""
    seen = np.unique(sample[~np.isnan(sample)])
    if len(seen) > limit:
        return None
    known = np.isnan(column)
    for value in seen:
        known |= column == value
    rest = column[~known]
    if len(rest):
        if len(seen) + len(np.unique(rest[:SAMPLE_ROWS])) > limit:
            return None
        seen = np.union1d(seen, np.unique(rest))
    return seen if len(seen) <= limit else None


class _Column:
    """Step statistics of one sensor column x: [rows] float32 (contiguous), NaN for missing."""

    def __init__(self, x: np.ndarray, window: int):
        n = len(x)
        missing = np.isnan(x)
        self.observed = n - int(np.count_nonzero(missing))
        self.lowest, self.highest = float(np.fmin.reduce(x)), float(np.fmax.reduce(x))
        self.first_missing = int(np.argmax(missing)) if self.observed < n else None
        self.gap_start, self.gap_length = self._longest(missing) if self.first_missing is not None else (0, 0)
        with np.errstate(invalid="ignore"):
            step = x[1:] - x[:-1]
            same = step == 0
            self.rising = int(np.count_nonzero(step > 0))
            self.falling = int(np.count_nonzero(step < 0))
        self.repeats = int(np.count_nonzero(same))
        # runs of equal steps -> runs of readings; only a sensor repeating often enough can have a long one
        self.flat_start, self.flat_length, self.flat_stretches, self.flat_rows = 0, 1, 0, 0
        if self.repeats:
            start, length = _runs(same)
            i = int(np.argmax(length))
            self.flat_start, self.flat_length = int(start[i]), int(length[i]) + 1
            long = length >= window - 1
            self.flat_stretches = int(np.count_nonzero(long))
            self.flat_rows = int(length[long].sum()) + self.flat_stretches

    @staticmethod
    def _longest(mask: np.ndarray) -> tuple[int, int]:
        start, length = _runs(mask)
        i = int(np.argmax(length))
        return int(start[i]), int(length[i])

    @property
    def held_share(self) -> float:
        """The share of steps between two readings that repeat the reading before."""
        return self.repeats / max(self.repeats + self.rising + self.falling, 1)


def _sensor_quality(table: SensorTable, rows: _Rows, window: int, split: int,
                    found: list[Finding]) -> tuple[SensorQuality, ...]:
    """Each sensor's statistics; split: the first row of the validation part (table.rows: none)."""
    n, k = table.values.shape
    if n == 0:
        return tuple(SensorQuality(s, 0, 1.0, None, None, None, None, 0, 0, 0.0, 0, None) for s in table.sensors)
    columns = np.ascontiguousarray(table.values.T)  # [sensors, rows]: every pass below reads contiguous memory
    sample = columns[:, ::max(1, n // SAMPLE_ROWS)]
    q_low, q_mid, q_high = _quantiles(sample, OUTLIER_QUANTILES)
    return tuple(_sensor(table, rows, window, split, name, columns[j], sample[j], (q_low[j], q_mid[j], q_high[j]),
                         found) for j, name in enumerate(table.sensors))


def _sensor(table: SensorTable, rows: _Rows, window: int, split: int, name: str, x: np.ndarray, sample: np.ndarray,
            quantiles: tuple[float, float, float], found: list[Finding]) -> SensorQuality:
    """One sensor's statistics; its findings are appended to `found`."""
    def say(severity, check, message, first=None, last=None):
        found.append(rows.finding(severity, check, name, message, first, last))

    n = len(x)
    c = _Column(x, window)
    seen = c.observed
    if seen == 0:
        say(WARNING, "missing", f"no readings at all ({n:,} empty cells): vigil train cannot scale it; "
                                "drop it (--drop-columns)")
        return SensorQuality(name, 0, 1.0, None, None, None, None, 0, 0, 0.0, 0, None)
    missing_share = 1.0 - seen / n
    if c.first_missing is not None:
        heavy = missing_share >= MISSING_WARNING or c.gap_length >= window
        at, longest = c.gap_start, c.gap_length
        say(WARNING if heavy else NOTE, "missing",
            f"{missing_share:.1%} of readings missing ({n - seen:,}); the longest run {longest:,} "
            f"readings on {rows.unit}s {rows.lines[at]}-{rows.lines[at + longest - 1]}"
            + (" (longer than a window)" if longest >= window else ""), c.first_missing)
    values = None
    constant = c.lowest == c.highest
    if constant:
        values = (c.lowest,)
        say(WARNING, "constant", f"constant at {_num(c.lowest)} in {'all ' if seen > 1 else ''}{_count(seen, 'reading')}: it tells the model "
                                 "nothing; drop it (--drop-columns)")
    elif seen >= MIN_READINGS:
        distinct = _distinct(x, sample, MAX_CATEGORIES)
        if distinct is not None:
            values = tuple(float(v) for v in distinct)
            kind = "binary" if len(values) == 2 else "categorical-looking"
            say(NOTE, "categorical", f"{kind}: only {len(values)} distinct values "
                                     f"({', '.join(_num(v) for v in values)}); the model treats them as a "
                                     "continuous measurement")
    varying = not constant and values is None and seen >= MIN_READINGS
    at, longest = c.flat_start, c.flat_length
    if not constant and values is None and longest >= window:
        last = at + longest - 1
        more = (f"; {c.flat_stretches:,} stretches of {window}+ readings hold {c.flat_rows / n:.1%} of them"
                if c.flat_stretches > 1 else "")
        say(WARNING, "flatline", f"flat-lined: {_num(x[at])} repeated {longest:,} times "
                                 f"({duration(float(table.time[last] - table.time[at]))}, {table.time_raw[at]} to "
                                 f"{table.time_raw[last]}), longer than a window ({window}){more}", at, last)
    elif varying and c.held_share >= HELD_SHARE:
        say(NOTE, "held", f"repeats the reading before in {c.held_share:.0%} of steps, in runs of up to "
                          f"{longest}: sampled more slowly than the file, or coarsely quantised")
    q_low, q_mid, q_high = quantiles
    width = q_high - q_low
    outliers, fences = 0, None
    if varying and width > 0:
        fences = (q_low - OUTLIER_FACTOR * width, q_high + OUTLIER_FACTOR * width)
        with np.errstate(invalid="ignore"):
            low, high = x < np.float32(fences[0]), x > np.float32(fences[1])
        below, above = int(np.count_nonzero(low)), int(np.count_nonzero(high))
        outliers = below + above
        if outliers:
            where = np.flatnonzero(low | high)
            first, last = int(where[0]), int(where[-1])
            extreme = int(where[np.argmax(np.abs(x[where] - q_mid))])
            beyond = " or ".join(f"{side} {_num(fence)}" for side, fence, count in
                                 (("below", fences[0], below), ("above", fences[1], above)) if count)
            say(WARNING, "outliers",
                f"{outliers:,} reading{'s' if outliers > 1 else ''} far outside the bulk (1-99 % range "
                f"{_num(q_low)} to {_num(q_high)}; these are {beyond}): the first {_num(x[first])} on "
                f"{rows.unit} {rows.lines[first]}, the farthest {_num(x[extreme])} on {rows.unit} {rows.lines[extreme]}; they "
                "stretch the sensor's scale", first, last)
    counter = False
    if varying:
        main, back = max(c.rising, c.falling), min(c.rising, c.falling)
        counter = (back <= COUNTER_BACKSTEPS * (c.rising + c.falling) and main >= COUNTER_MIN_STEPS
                   and main >= COUNTER_MIN_STEP_SHARE * seen)
        if counter:
            direction = "rises" if c.rising > c.falling else "falls"
            say(WARNING, "counter", f"monotonic: {direction} in {main:,} steps and goes back in {back:,}, from "
                                    f"{_num(c.lowest if c.rising > c.falling else c.highest)} to "
                                    f"{_num(c.highest if c.rising > c.falling else c.lowest)}: a counter or a trend; "
                                    "later data will hold values training never saw (use its rate of change, "
                                    "or drop it)")
    if not constant and not counter and split < n:
        _unseen(table, rows, x, split, say)
    median = float(q_mid) if np.isfinite(q_mid) else None  # (None: the sample missed its few readings)
    return SensorQuality(name, seen, missing_share, c.lowest, c.highest, median, values, longest, at,
                         c.held_share, outliers, fences)


def _unseen(table: SensorTable, rows: _Rows, x: np.ndarray, split: int, say) -> None:
    """The `unseen` check of one sensor's readings x, the validation part from row `split` on."""
    before, after = x[:split], x[split:]
    if not np.isfinite(before).any():
        return
    low, high = float(np.nanmin(before)), float(np.nanmax(before))
    margin = UNSEEN_MARGIN * (high - low)
    with np.errstate(invalid="ignore"):
        off = np.abs(np.clip(after, low - margin, high + margin) - after)  # NaN where missing
    outside = np.flatnonzero(off > 0)
    seen = int(np.count_nonzero(np.isfinite(after)))
    if not seen or len(outside) < UNSEEN_SHARE * seen:
        return
    farthest = split + int(outside[np.argmax(off[outside])])
    n = table.rows
    range_seen = f"constant at {_num(low)}" if high == low else f"between {_num(low)} and {_num(high)}"
    say(WARNING, "unseen",
        f"{len(outside) / seen:.0%} of its validation readings ({rows.unit}s {rows.lines[split]}-{rows.lines[n - 1]}, "
        f"the last {(n - split) / n:.0%} of the file, where its error scale and the threshold are set) lie outside "
        f"the training part's range ({range_seen}), the farthest {_num(x[farthest])} on {rows.unit} "
        f"{rows.lines[farthest]}: the model never learned such values, and its error on them sets the threshold; "
        "train on a stretch that covers them, or drop the sensor", split + int(outside[0]), split + int(outside[-1]))


def _count(n: int, word: str) -> str:
    """'1 row', '1,500 rows'."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _num(x) -> str:
    """A reading as the user would write it: 3.2, 1e+06, nan."""
    return f"{float(x):.6g}"


# ----------------------------------------------------------------------------- text


def _grouped(findings: Sequence[Finding], shown: int) -> list[str]:
    """Findings one kind (severity and check) after another, warnings first, each severity's
    kinds in the order they first appear: the first `shown` of a kind in full, then one line for the rest of it (52 held
    analysers in two files are 3 lines and a summary, not 104 lines)."""
    kinds: dict[tuple[str, str], list[Finding]] = {}
    for f in sorted(findings, key=lambda f: f.severity != WARNING):  # (a stable sort)
        kinds.setdefault((f.severity, f.check), []).append(f)
    lines = []
    for (severity, check), group in kinds.items():
        lines.extend(f.describe() for f in group[:shown])
        rest = group[shown:]
        if not rest:
            continue
        files = {f.path for f in rest}
        columns = list(dict.fromkeys(f.column for f in rest if f.column is not None))
        where = f"in {_count(len(files), 'file')}" if len(files) > 1 else f"in {next(iter(files)) or 'all files'}"
        if columns:
            names = ", ".join(columns[:8]) + (", ..." if len(columns) > 8 else "")
            where += f", {_count(len(columns), 'column')} ({names})"
        lines.append(f"{severity}: {len(rest):,} more like the {check!r} {severity}{'s' if shown > 1 else ''} above "
                     f"{where}: --json or --html lists them")
    return lines


def format_text(report: QualityReport) -> str:
    """The report as `vigil inspect` prints it: per file a summary, then the findings (a few
    of each kind in full; see _grouped)."""
    lines = []
    for f in report.files:
        sensors = len(f.sensors)
        lines.append(f"{f.path}: {_count(f.rows, 'row')}, {_count(sensors, 'sensor')}, "
                     f"{f.time_start} to {f.time_end}")
        lines.append(f"  sampling interval {f.sampling.describe()}")
        skipped = f.duplicate_times + f.backward_times
        if skipped:
            lines.append(f"  rows left out for their time: {f.duplicate_times:,} duplicate, "
                         f"{f.backward_times:,} stepping back")
        if f.labelled_rows:
            lines.append(f"  rows labelled anomalous: {f.labelled_rows:,}")
    verdict = "enough" if report.enough_windows else "too few"
    normal = " without a labelled row" if any(f.labelled_rows for f in report.files) else ""
    lines.append(f"windows of {report.window} readings{normal}: {report.windows:,} ({verdict}; at least "
                 f"{report.windows_needed:,} wanted)")
    lines.append("")
    lines.extend(_grouped(report.findings, SHOWN_PER_KIND))
    w, n = len(report.warnings), len(report.notes)
    if report.findings:
        lines.append("")
    lines.append(f"{w} warning{'s' if w != 1 else ''}, {n} note{'s' if n != 1 else ''}")
    return "\n".join(lines) + "\n"
