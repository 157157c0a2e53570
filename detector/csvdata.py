"""Reading sensor CSV files into SensorTables (detector.table).

A sensor file is a CSV with a header line, a time column, numeric sensor columns and
optionally a 0/1 label column. The delimiter (`,` `;` tab `|`) is detected from the
header. Missing readings (an empty cell, `nan` or `null` in any case) become NaN; they
are masked downstream, never filled. Times are ISO-8601 (naive ones are UTC) or epoch
seconds (epoch milliseconds when the first is over 1e11). Every other problem stops the
read with a DataError whose message names the file, the 1-based line (the header is line
1) and the column:

    data/x.csv, line 17, column 'Pressure': not a number: 'abc'

Two paths, one set of rules. Files are read by Apache Arrow's multi-threaded CSV reader
(pyarrow: tokenising, number parsing and ISO timestamps in C++, about ten times what
numpy on bytes managed), which accepts the usual file and gives no line numbers. Whatever
it refuses or leaves in doubt (a bad cell, ragged rows, quoting, a mixed time column, an
infinity) is read again by the reference path: the csv module and a per-cell parse
(float(), datetime.fromisoformat), which words the error with its line, or reads the
file when it is only unusual. Both give the same table for every file the fast one takes
(tests/test_csvdata.py checks them against each other).
"""

from __future__ import annotations

import codecs
import csv
import gc
import io
import itertools
import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import numpy as np

from detector.table import DataError, SensorTable, choose_columns, in_time_order

__all__ = ["read_csv"]

DELIMITERS = (",", ";", "\t", "|")
# Cell spellings of "no reading", compared after strip() and lower().
MISSING = frozenset({"", "nan", "null"})
# Plain-number timestamps are epoch seconds, or epoch milliseconds when the first one
# is above this (1e11 s is the year 5138; 1e11 ms is 1973).
EPOCH_MS_THRESHOLD = 1e11

# The number syntax: ASCII decimal, optional exponent. No inf/nan, no underscores, no hex,
# no surrounding text (surrounding whitespace is stripped).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Arrow's null spellings are exact: every case of the missing-value words.
_NULLS = sorted({"".join(c) for w in ("nan", "null") for c in itertools.product(*((x, x.upper()) for x in w))}
                | {""})


def read_csv(path, *, time_column: str | None = None, label_column: str | None = None,
             drop_columns: Sequence[str] = (), strict_time: bool = False) -> SensorTable:
    """Read one sensor CSV.

    time_column: the time column's name; None = the first column.
    label_column: a 0/1 label column's name; None = "anomaly" if the file has one.
    drop_columns: columns to ignore entirely (their cells are not looked at).
    strict_time: refuse a file whose time goes backwards (DataError naming the line) instead
    of leaving out the rows whose time is not after the last kept row (table.skipped).
    Every other column is a sensor and must be numeric.
    """
    path = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    if not data or data.isspace():
        raise DataError(f"{path}: empty file (expected a header line and data rows)")
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}, line {_line_at(data, e.start)}: not UTF-8 text") from None
    if b"\0" in data:
        line = _line_at(data, data.index(b"\0"))
        raise DataError(f"{path}, line {line}: NUL byte (not a text file?)")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    if not data.endswith(b"\n"):
        data += b"\n"
    delimiter = _detect_delimiter(data)
    read = _Fast(path, data, delimiter, time_column, label_column, drop_columns).read() \
        if b"\r" not in data else None  # (old Mac line ends: the csv module)
    if read is None:
        read = _Reference(path, data, delimiter, time_column, label_column, drop_columns).read()
    names, columns, time_raw, time, values, labels, lines = read
    return in_time_order(path, names[columns.time], time_raw, time, tuple(names[j] for j in columns.sensors),
                         values, labels, lines, strict_time)


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _detect_delimiter(data: bytes) -> str:
    """The candidate found most often in the header line; ties go to one found as often
    in the next line, then to the order of DELIMITERS. ',' when there is none."""
    end = data.index(b"\n")
    header = data[:end]
    second = data[end + 1:data.find(b"\n", end + 1)]
    counts = {d: header.count(d.encode()) for d in DELIMITERS}
    best = max(counts.values())
    if best == 0:
        return ","
    tied = [d for d in DELIMITERS if counts[d] == best]
    return ([d for d in tied if second.count(d.encode()) == best] or tied)[0]


def _column_names(path: str, header: list[str]) -> list[str]:
    names = [name.strip() for name in header]
    seen = set()
    for i, name in enumerate(names, 1):
        if not name:
            raise DataError(f"{path}, line 1: column {i} has no name")
        if name in seen:
            raise DataError(f"{path}, line 1, column {name!r}: duplicate column name")
        seen.add(name)
    return names


def _plain_quoting(data: bytes, delimiter: str) -> bool:
    """Every quote in the file opens a cell, closes one, or is doubled inside one: Arrow then
    cuts cells as the csv module does (strict). Otherwise (a quote inside an unquoted cell,
    text after a closing quote, one left open) the csv module decides."""
    if b'"' not in data:
        return True
    arr = np.frombuffer(data, np.uint8)
    at = np.flatnonzero(arr == 34)
    if len(at) % 2:
        return False
    bounds = np.array([ord(delimiter), 10, 34], np.uint8)
    opening, closing = at[0::2], at[1::2]  # in a well-formed file the quotes pair up in order
    before = np.where(opening > 0, arr[np.maximum(opening - 1, 0)], 10)
    after = arr[np.minimum(closing + 1, len(arr) - 1)]
    return bool(np.isin(before, bounds).all() and np.isin(after, bounds).all())


def epoch_seconds(numbers: np.ndarray) -> np.ndarray:
    """A plain-number time column -> epoch seconds: milliseconds when the first is over
    EPOCH_MS_THRESHOLD (for CSV and Parquet alike)."""
    return numbers / 1000.0 if numbers[0] > EPOCH_MS_THRESHOLD else numbers


def arrow_iso_seconds(stripped) -> np.ndarray | None:
    """Epoch seconds of an Arrow text column of ISO-8601 times that are all naive (taken as
    UTC) or all with an offset; None otherwise (mixed layouts, a bad cell: iso_seconds then)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for zone in (None, "UTC"):
        try:
            return seconds_of_micros(pc.cast(stripped, pa.timestamp("us", zone)).cast(pa.int64()).to_numpy())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return None


def iso_seconds(raw: list[str], fail: Callable[[int, str], DataError]) -> np.ndarray:
    """ISO-8601 time cells (stripped) -> epoch seconds, one by one (datetime.fromisoformat);
    fail(row, message) words the error at the first bad cell."""
    out = np.empty(len(raw), np.float64)
    for i, text in enumerate(raw):
        out[i] = _iso_cell(text, lambda message, i=i: fail(i, message))
    return out


def seconds_of_micros(micros: np.ndarray) -> np.ndarray:
    """Epoch microseconds -> float seconds, with _iso_cell's arithmetic (whole seconds, then
    the fraction), so both paths give the same bits."""
    whole, fraction = np.divmod(micros, 1_000_000)
    return whole.astype(np.float64) + fraction / 1e6


# ----------------------------------------------------------------------------- Arrow


class _Fast:
    """The usual file through pyarrow.csv; read() gives None whenever the reference path
    must decide (an error to word, or something unusual)."""

    def __init__(self, path, data, delimiter, time_column, label_column, drop_columns):
        self.path, self.data, self.delimiter = path, data, delimiter
        self.options = time_column, label_column, drop_columns

    def read(self):
        import pyarrow as pa
        import pyarrow.compute as pc
        from pyarrow import csv as pa_csv

        data, path = self.data, self.path
        first_line = data[:data.index(b"\n")].decode("utf-8")
        if not first_line.strip() or first_line.count('"') % 2 or not _plain_quoting(data, self.delimiter):
            return None
        names = _column_names(path, next(csv.reader([first_line], delimiter=self.delimiter)))
        columns = choose_columns(f"{path}, line 1", names, *self.options)
        used = [columns.time] + ([] if columns.label is None else [columns.label]) + columns.sensors
        # numbers as numbers (Arrow trims spaces around them); if any cell is not, all as text
        table = self._table(pa, pa_csv, names, used, columns.time, pa.float64()) \
            or self._table(pa, pa_csv, names, used, columns.time, pa.string())
        if table is None or table.num_rows == 0:
            return None
        stripped = pc.utf8_trim_whitespace(table.column(names[columns.time]))
        time = self._time(pa, pc, stripped)
        if time is None:
            return None
        values = np.empty((table.num_rows, len(columns.sensors)), np.float32)
        for k, j in enumerate(columns.sensors):
            column = _numbers(pa, pc, table.column(names[j]))
            if column is None:
                return None
            with np.errstate(over="ignore"):
                values[:, k] = column
        if np.isinf(values).any():
            return None  # out of float32's range: words it
        labels = None
        if columns.label is not None:
            label = _numbers(pa, pc, table.column(names[columns.label]))
            if label is None or not ((label == 0) | (label == 1)).all():
                return None
            labels = label.astype(np.int8)
        return names, columns, stripped.to_pylist(), time, values, labels, self._lines

    def _table(self, pa, pa_csv, names, used, time, kind):
        """The used columns, the time as text and the others as `kind`; None if Arrow refuses."""
        types = {names[j]: kind for j in used}
        types[names[time]] = pa.string()
        try:
            return pa_csv.read_csv(
                pa.py_buffer(self.data),
                read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1, use_threads=True),
                parse_options=pa_csv.ParseOptions(delimiter=self.delimiter, quote_char='"', double_quote=True,
                                                  escape_char=False, newlines_in_values=True,
                                                  ignore_empty_lines=True),
                convert_options=pa_csv.ConvertOptions(column_types=types, include_columns=[names[j] for j in used],
                                                      null_values=_NULLS, strings_can_be_null=False,
                                                      quoted_strings_can_be_null=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None

    def _time(self, pa, pc, stripped) -> np.ndarray | None:
        """Epoch seconds of the time column, or None."""
        first = stripped[0].as_py()
        if first.lower() in MISSING:
            return None
        if _NUMBER.fullmatch(first):
            if not pc.all(pc.match_substring_regex(stripped, r"^" + _NUMBER.pattern + "$")).as_py():
                return None
            return epoch_seconds(pc.cast(stripped, pa.float64()).to_numpy())
        return arrow_iso_seconds(stripped)  # None for mixed layouts: fromisoformat cell by cell

    def _lines(self, rows: np.ndarray) -> np.ndarray:
        """The file lines of data rows (asked only when rows are named): without quotes, a
        row is a line that is not empty; otherwise the csv module counts."""
        data = self.data
        if b'"' in data:
            return _Reference(self.path, data, self.delimiter, *self.options).row_lines()[rows]
        ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
        filled = np.flatnonzero(np.diff(ends) > 1)  # body lines with something on them
        return filled[rows] + 2


def _numbers(pa, pc, cells) -> np.ndarray | None:
    """A column Arrow read as numbers (nulls: the missing-value words) or as text (then
    stripped, the missing-value words in any case nulled, the rest cast), as float64 with
    NaN where missing; None when a cell is not a number by _NUMBER (or is "-nan", "inf")."""
    if pa.types.is_string(cells.type):
        cells = pc.utf8_trim_whitespace(cells)
        missing = pc.is_in(cells, value_set=pa.array(_NULLS))
        cells = pc.if_else(missing, pa.scalar(None, pa.string()), cells)
        if not pc.all(pc.match_substring_regex(pc.fill_null(cells, "0"), "^" + _NUMBER.pattern + "$")).as_py():
            return None
        cells = pc.cast(cells, pa.float64())
    column = cells.to_numpy()  # nulls -> NaN
    if np.isinf(column).any() or np.count_nonzero(np.isnan(column)) != cells.null_count:
        return None  # an infinity, or "-nan": the reference path words it
    return column


# ----------------------------------------------------------------------------- reference


class _Reference:
    """The csv module and a per-cell parse: any quoting, any line ends, and the errors."""

    def __init__(self, path, data, delimiter, time_column, label_column, drop_columns):
        self.path, self.data, self.delimiter = path, data, delimiter
        self.options = time_column, label_column, drop_columns

    def _records(self) -> tuple[list[list[str]], list[int]]:
        reader = csv.reader(io.StringIO(self.data.decode("utf-8"), newline=""), delimiter=self.delimiter,
                            strict=True)
        records: list[list[str]] = []
        lines: list[int] = []
        previous = 0
        collecting = gc.isenabled()
        gc.disable()  # a million small lists would set off needless collections
        try:
            for record in reader:
                if record:
                    records.append(record)
                    lines.append(previous + 1)
                previous = reader.line_num
        except csv.Error as e:
            raise DataError(f"{self.path}, line {previous + 1}: bad CSV quoting ({e})") from None
        finally:
            if collecting:
                gc.enable()
        if lines[0] != 1 or not "".join(records[0]).strip():
            raise DataError(f"{self.path}, line 1: the header line is empty")
        return records, lines

    def row_lines(self) -> np.ndarray:
        return np.asarray(self._records()[1][1:], np.int64)

    def read(self):
        path = self.path
        records, lines = self._records()
        names = _column_names(path, records[0])
        body, lines = records[1:], np.asarray(lines[1:], np.int64)
        if not body:
            raise DataError(f"{path}: no data rows after the header line")
        for i, record in enumerate(body):
            if len(record) != len(names):
                cells = len(record)
                detail = (f"no cell for column {names[cells]!r}" if cells < len(names)
                          else f"extra cell after column {names[-1]!r}")
                raise DataError(f"{path}, line {lines[i]}: {cells} cells, but the header has "
                                f"{len(names)} columns ({detail})")
        columns = choose_columns(f"{path}, line 1", names, *self.options)

        def fail(row: int, j: int, message: str) -> DataError:
            return DataError(f"{path}, line {int(lines[row])}, column {names[j]!r}: {message}")

        time_raw, time = _time_cells([r[columns.time].strip() for r in body], columns.time, fail)
        values = np.empty((len(body), len(columns.sensors)), np.float64)
        seen: dict[str, float | None] = {}
        for i, record in enumerate(body):  # row by row: the error names the first bad cell in the file
            for k, j in enumerate(columns.sensors):
                text = record[j]
                value = seen.get(text, False)
                if value is False:
                    value = seen[text] = _cell_number(text)
                if value is None:
                    raise fail(i, j, f"not a number: {text!r}")
                values[i, k] = value
        with np.errstate(over="ignore"):  # reported just below, with its cell
            narrow = values.astype(np.float32)
        too_big = np.flatnonzero(np.isinf(narrow))
        if len(too_big):
            i, k = divmod(int(too_big[0]), len(columns.sensors))
            raise fail(i, columns.sensors[k], f"number out of range: {body[i][columns.sensors[k]]!r}")
        labels = None
        if columns.label is not None:
            labels = np.empty(len(body), np.int8)
            for i, record in enumerate(body):
                value = _cell_number(record[columns.label])
                if value not in (0.0, 1.0):
                    raise fail(i, columns.label, f"label must be 0 or 1, not {record[columns.label].strip()!r}")
                labels[i] = value
        return names, columns, time_raw, time, narrow, labels, lambda rows: lines[rows]


def _cell_number(text: str) -> float | None:
    """Per-cell parse: a float (NaN for a missing-value token), None if not a number."""
    t = text.strip()
    if t.lower() in MISSING:
        return math.nan
    return float(t) if _NUMBER.fullmatch(t) else None


def _time_cells(raw: list[str], j: int, fail) -> tuple[list[str], np.ndarray]:
    """The time column's (stripped) cells -> epoch seconds; DataError at the first bad cell."""
    first = raw[0]
    if first.lower() in MISSING:
        raise fail(0, j, "missing timestamp")
    if _NUMBER.fullmatch(first):
        values = np.empty(len(raw), np.float64)
        for i, text in enumerate(raw):
            value = _cell_number(text)
            if value is not None and math.isnan(value):
                raise fail(i, j, "missing timestamp")
            if value is None or math.isinf(value):
                raise fail(i, j, f"not a timestamp: {text!r} (the first row has a plain "
                                 "number, so the column is read as epoch time)")
            values[i] = value
        return raw, epoch_seconds(values)
    return raw, iso_seconds(raw, lambda i, message: fail(i, j, message))


def _iso_cell(text: str, fail) -> float:
    if text.lower() in MISSING:
        raise fail("missing timestamp")
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"not a timestamp: {text!r} (expected ISO-8601 like "
                   "2020-02-08 13:30:47, or epoch seconds)") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    delta = stamp - _EPOCH
    return float(delta.days * 86400 + delta.seconds) + delta.microseconds / 1e6
