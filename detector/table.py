"""The sensor table: what a data file becomes, for training, offline scoring and checks.

No file I/O here (detector.csvdata and detector.parquetdata read files into SensorTables),
so training and the daemon's side can use the types without the readers. Also the rules
every reader applies the same way: which columns are time, label and sensors
(choose_columns), and rows whose time is not after the newest one before them
(in_time_order: skipped, or refused with strict_time; admit_late puts back those less than
one interval late).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DataError", "SensorTable", "SkippedRows", "Columns", "admit_late", "choose_columns", "in_time_order"]

DEFAULT_LABEL = "anomaly"


class DataError(ValueError):
    """Bad input data; the message names the file, line and column."""


@dataclass(frozen=True, eq=False)
class SkippedRows:
    """Rows of a file left out because their time is not after the newest row kept before
    them (a logger's clock stepping back, or a repeated time): the rule the daemon applies to
    an asset's readings, so a file is read as `vigil serve` would take it.

    index: [k] int64 positions of the skipped rows among the file's data rows (0-based).
    time_raw: [k] their time cells as written; lines: [k] int64 their file lines.
    time, values, labels: [k] their times (epoch seconds), [k, sensors] values, [k] labels
        (None without a label column), so that rows only a little late can be put back
        (admit_late).
    newest_raw, newest_lines: [k] the time cell and file line of the newest row kept before
        each (the one it is not after).
    unit: what `lines` count: "line" (a CSV file's lines, the header is 1) or "row" (a
        Parquet file's rows, from 1).
    """

    index: np.ndarray
    time_raw: list[str]
    lines: np.ndarray
    time: np.ndarray
    values: np.ndarray
    labels: np.ndarray | None
    newest_raw: list[str]
    newest_lines: np.ndarray
    unit: str = "line"

    @property
    def line(self) -> int:
        """The file line of the first skipped row."""
        return int(self.lines[0])

    @property
    def previous_line(self) -> int:
        """The file line of the newest row kept before the first skipped one."""
        return int(self.newest_lines[0])

    @property
    def previous(self) -> str:
        """That row's time cell."""
        return self.newest_raw[0]

    def subset(self, which: np.ndarray) -> SkippedRows | None:
        """The rows `which` ([k] bool) of these, or None when there are none."""
        if not which.any():
            return None
        at = np.flatnonzero(which)
        pick = at.tolist()
        return SkippedRows(self.index[at], [self.time_raw[i] for i in pick], self.lines[at], self.time[at],
                           self.values[at], None if self.labels is None else self.labels[at],
                           [self.newest_raw[i] for i in pick], self.newest_lines[at], self.unit)

    @property
    def count(self) -> int:
        return len(self.index)

    def follows(self) -> np.ndarray:
        """[k] int64: the row of the table (file rows less these skipped ones) that each skipped
        row follows in the file."""
        return self.index - np.arange(self.count) - 1

    def describe(self, path: str) -> str:
        """One line for the user: how many rows, and the first one."""
        rows = "1 row" if self.count == 1 else f"{self.count} rows"
        return (f"{path}: skipped {rows} whose time is not after the row before (a clock stepping back "
                f"or a repeated time); the first is {self.unit} {self.line}: {self.time_raw[0]!r} is not after "
                f"{self.previous!r} on {self.unit} {self.previous_line}. --strict-time refuses such files instead")


@dataclass(frozen=True, eq=False)
class SensorTable:
    """One sensor file. Rows are in file order; time increases (rows whose time does not are
    left out when the file is read, and listed in `skipped`; with strict_time such a file is
    refused, and rows with equal times are kept). admit_late puts back the rows less than one
    interval late, at the time of the row before them: time then never decreases.

    path: the file it came from.
    time_raw: [rows] the time cells as written (surrounding whitespace and quotes removed).
    time: [rows] float64 epoch seconds (UTC; naive timestamps are taken as UTC).
    sensors: sensor column names, in file order.
    values: [rows, sensors] float32, NaN where a reading is missing.
    labels: [rows] int8 0/1, or None when the file has no label column.
    skipped: the file's rows left out for their time, or None when there were none.
    late: how many rows admit_late put back.
    """

    path: str
    time_raw: list[str]
    time: np.ndarray
    sensors: tuple[str, ...]
    values: np.ndarray
    labels: np.ndarray | None
    skipped: SkippedRows | None = None
    late: int = 0

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "path", str(self.path))
        put(self, "sensors", tuple(self.sensors))
        put(self, "time", np.asarray(self.time, dtype=np.float64))
        put(self, "values", np.asarray(self.values, dtype=np.float32))
        if self.labels is not None:
            put(self, "labels", np.asarray(self.labels, dtype=np.int8))
        rows = len(self.time_raw)
        if self.time.shape != (rows,):
            raise ValueError(f"{self.path}: time has shape {self.time.shape}, expected ({rows},)")
        if self.values.shape != (rows, len(self.sensors)):
            raise ValueError(f"{self.path}: values has shape {self.values.shape}, "
                             f"expected ({rows}, {len(self.sensors)})")
        if self.labels is not None and self.labels.shape != (rows,):
            raise ValueError(f"{self.path}: labels has shape {self.labels.shape}, expected ({rows},)")

    @property
    def rows(self) -> int:
        return len(self.time)

    def times_ms(self) -> np.ndarray:
        """[rows] int64 epoch milliseconds, as the daemon takes a reading's time."""
        return np.round(self.time * 1000.0).astype(np.int64)

    def select(self, names: Sequence[str]) -> np.ndarray:
        """Sensor columns by name, in the order given: [rows, len(names)] float32 (a copy)."""
        if isinstance(names, str):
            names = [names]
        index = {name: i for i, name in enumerate(self.sensors)}
        missing = [name for name in names if name not in index]
        if missing:
            raise DataError(f"{self.path}: no sensor column {', '.join(map(repr, missing))} "
                            f"(its sensors: {', '.join(map(repr, self.sensors))})")
        return np.take(self.values, [index[name] for name in names], axis=1)


def admit_late(table: SensorTable, interval_seconds: float | None) -> SensorTable:
    """Put back the skipped rows that are less than one interval older than the newest row
    before them, as the daemon takes a late reading (detector.grid): at that row's time, so
    it joins the mean of the newest interval. A row at that very time is a repeat and stays
    out, as do older ones and every skipped row of a model without an interval. time_raw
    keeps each row's time as written."""
    s = table.skipped
    if s is None or not interval_seconds:
        return table
    after = s.follows()
    newest = table.times_ms()[after]
    t = np.round(s.time * 1000.0).astype(np.int64)
    late = (t < newest) & (newest - t < interval_seconds * 1000.0)
    if not late.any():
        return table
    at = after[late] + 1
    cells = np.array([s.time_raw[j] for j in np.flatnonzero(late).tolist()], dtype=object)
    raw = np.insert(np.array(table.time_raw, dtype=object), at, cells).tolist()
    labels = None if table.labels is None else np.insert(table.labels, at, s.labels[late])
    return SensorTable(table.path, raw, np.insert(table.time, at, table.time[after[late]]), table.sensors,
                       np.insert(table.values, at, s.values[late], axis=0), labels, s.subset(~late),
                       table.late + int(late.sum()))


@dataclass(frozen=True)
class Columns:
    """Which columns of a file are what: indices into its column names."""

    time: int
    label: int | None
    sensors: list[int]


def choose_columns(where: str, names: Sequence[str], time_column: str | None, label_column: str | None,
                   drop_columns: Sequence[str]) -> Columns:
    """The time, label and sensor columns of a file with these column names. time_column:
    None = the first; label_column: None = "anomaly" when there is one; drop_columns are left
    out; every other column is a sensor. where: how errors name the header ("data/x.csv,
    line 1" or "data/x.parquet")."""
    index = {name: j for j, name in enumerate(names)}

    def column(name: str, option: str) -> int:
        if name not in index:
            raise DataError(f"{where}, column {name!r}: no such column (named by {option}); "
                            f"the header has {', '.join(map(repr, names))}")
        return index[name]

    if isinstance(drop_columns, str):
        drop_columns = [drop_columns]
    dropped = {column(name, "drop_columns") for name in drop_columns}
    t = 0 if time_column is None else column(time_column, "time_column")
    if t in dropped:
        raise DataError(f"{where}, column {names[t]!r}: the time column cannot be dropped")
    if label_column is None:
        label = index.get(DEFAULT_LABEL)
        if label in dropped or label == t:
            label = None
    else:
        label = column(label_column, "label_column")
        if label in dropped or label == t:
            clash = "dropped" if label in dropped else "the time column"
            raise DataError(f"{where}, column {label_column!r}: the label column cannot be {clash}")
    sensors = [j for j in range(len(names)) if j not in dropped and j != t and j != label]
    if not sensors:
        others = [f"time column {names[t]!r}"]
        if label is not None:
            others.append(f"label column {names[label]!r}")
        if dropped:
            others.append("dropped " + ", ".join(repr(names[j]) for j in sorted(dropped)))
        raise DataError(f"{where}: no sensor columns ({'; '.join(others)})")
    return Columns(t, label, sensors)


def in_time_order(path: str, time_name: str, time_raw: list[str], time: np.ndarray, sensors: tuple[str, ...],
                  values: np.ndarray, labels: np.ndarray | None, lines, strict_time: bool,
                  unit: str = "line") -> SensorTable:
    """The table of a file's rows, with the daemon's rule for time: a row counts only when
    its time is after every row kept before it; the others are left out and listed in
    `skipped`. With strict_time a file whose time goes backwards is refused instead (rows
    with equal times are kept). lines(rows) -> [len(rows)] int64: the file lines (unit) of
    data rows, asked only when a row is named."""
    if strict_time:
        back = np.flatnonzero(time[1:] < time[:-1])
        if len(back):
            i = int(back[0]) + 1
            at, before = lines(np.array([i, i - 1])).tolist()
            raise DataError(f"{path}, {unit} {at}, column {time_name!r}: time goes backwards: {time_raw[i]!r} is "
                            f"earlier than {time_raw[i - 1]!r} on {unit} {before}")
    late = np.r_[False, time[1:] <= np.maximum.accumulate(time)[:-1]] if not strict_time and len(time) else None
    if late is None or not late.any():
        return SensorTable(path=path, time_raw=time_raw, time=time, sensors=sensors, values=values, labels=labels)
    index = np.flatnonzero(late)
    kept = np.flatnonzero(~late)
    newest = kept[np.searchsorted(kept, index) - 1]  # row 0 is always kept; kept rows increase
    skipped = SkippedRows(index=index, time_raw=[time_raw[i] for i in index.tolist()],
                          lines=np.asarray(lines(index), np.int64), time=time[index],
                          values=values[index], labels=None if labels is None else labels[index],
                          newest_raw=[time_raw[i] for i in newest.tolist()],
                          newest_lines=np.asarray(lines(newest), np.int64), unit=unit)
    return SensorTable(path=path, time_raw=[time_raw[i] for i in kept.tolist()], time=time[kept], sensors=sensors,
                       values=values[kept], labels=None if labels is None else labels[kept], skipped=skipped)
