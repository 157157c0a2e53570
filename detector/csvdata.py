"""Reading sensor CSV files into SensorTables.

A sensor file is a CSV with a header line, a time column, numeric sensor columns and
optionally a 0/1 label column. The delimiter (`,` `;` tab `|`) is detected from the
header. Missing readings (an empty cell, `nan` or `null` in any case) become NaN; they
are masked downstream, never filled. Every other problem stops the read with a
DataError whose message names the file, the 1-based line (the header is line 1) and the
column:

    data/x.csv, line 17, column 'Pressure': not a number: 'abc'

Speed: `vigil score` has to sustain 100,000 rows/s end to end, so reading must cost a
small fraction of that. Cell-by-cell Python (csv.reader, float(), fromisoformat) costs
microseconds per cell, and so do numpy's own string parsers, so the common case is
parsed column-wise with numpy integer arithmetic on the raw bytes:

- one vectorised scan finds every delimiter and line end; every line must have the
  header's number of cells;
- cells are gathered, a cache-sized block at a time, into a position-major byte
  matrix [width, cells]; `[+-]digits[.digits][e[+-]digits]` cells become an integer
  mantissa and a power of ten (see _decimal_block for why the result is float()'s);
- ISO timestamps laid out like the first row's (same length, separators and offset
  sign, digits where it has digits) are decoded from their digit positions.

Whatever the vectorised paths do not take (quoting beyond whole-cell quotes, rare
spellings of numbers and timestamps, bad cells) goes to a per-cell path on csv,
float() and datetime.fromisoformat, which also words the errors. Both paths accept
exactly the same inputs; the fast one is only faster.
"""

from __future__ import annotations

import codecs
import csv
import gc
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

__all__ = ["DataError", "SensorTable", "SkippedRows", "read_csv", "read_path"]

DELIMITERS = (",", ";", "\t", "|")
DEFAULT_LABEL = "anomaly"
# Cell spellings of "no reading", compared after strip() and lower().
MISSING = frozenset({"", "nan", "null"})
# Plain-number timestamps are epoch seconds, or epoch milliseconds when the first one
# is above this (1e11 s is the year 5138; 1e11 ms is 1973).
EPOCH_MS_THRESHOLD = 1e11

# The number syntax both paths accept: ASCII decimal, optional exponent. No inf/nan,
# no underscores, no hex, no surrounding text (surrounding whitespace is stripped).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
# Timestamp layouts the vectorised path decodes (anything else: fromisoformat per row).
_ISO_LAYOUT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6}))?)?"
    r"(?:(Z)|([+-])(\d{2}):?(\d{2}))?)?",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_POW10 = np.array([float(10**k) for k in range(33)])  # exact doubles up to 10**22
_DIGIT_LIMIT = 2**53  # integers up to here convert to float64 exactly
_MAX_CELL = 32  # wider number cells go to the per-cell path
_MAX_TEXT = 64  # wider time cells are sliced one by one
_POSITIONS = np.arange(_MAX_CELL, dtype=np.uint8)[:, None]
_CHUNK = 1 << 16  # cells per block in the number parser, so a block stays in cache
_GATHER_BYTES = 1 << 18  # bytes of file per block when gathering cells (stays in cache)
_NAN_WORD = np.frombuffer(b"nan ", dtype=np.uint8)[:, None]  # zero padding | 32 == space
_NULL_WORD = np.frombuffer(b"null", dtype=np.uint8)[:, None]


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
    """

    index: np.ndarray
    time_raw: list[str]
    lines: np.ndarray
    time: np.ndarray
    values: np.ndarray
    labels: np.ndarray | None
    newest_raw: list[str]
    newest_lines: np.ndarray

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
                           [self.newest_raw[i] for i in pick], self.newest_lines[at])

    @property
    def count(self) -> int:
        return len(self.index)

    def describe(self, path: str) -> str:
        """One line for the user: how many rows, and the first one."""
        rows = "1 row" if self.count == 1 else f"{self.count} rows"
        return (f"{path}: skipped {rows} whose time is not after the row before (a clock stepping back "
                f"or a repeated time); the first is line {self.line}: {self.time_raw[0]!r} is not after "
                f"{self.previous!r} on line {self.previous_line}. --strict-time refuses such files instead")


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
    after = s.index - np.arange(s.count) - 1  # each skipped row follows this row of the table
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


def read_path(path, *, time_column: str | None = None, label_column: str | None = None,
              drop_columns: Sequence[str] = (), strict_time: bool = False) -> list[SensorTable]:
    """A CSV file -> [its table]; a directory -> one table per *.csv in it, sorted by name.

    Directories are not searched recursively; other files in them are ignored. Each file
    stays its own table, so windows never span two files.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.suffix.lower() == ".csv" and f.is_file()),
                       key=lambda f: f.name)
        if not files:
            raise DataError(f"{path}: no .csv files in this directory")
    elif p.exists():
        files = [p]
    else:
        raise DataError(f"{path}: no such file or directory")
    return [read_csv(f, time_column=time_column, label_column=label_column,
                     drop_columns=drop_columns, strict_time=strict_time) for f in files]


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
    split = None
    if b"\r" not in data:  # (old Mac line ends: csv)
        split = _split_fast(path, data, delimiter, parity=False)
        if split is None:  # quoted delimiters or line breaks, "" escapes
            split = _split_fast(path, data, delimiter, parity=True)
    if split is None:  # quoting that is not well formed: csv cuts it, or words the error
        split = _split_csv(path, data, delimiter)
    return _build(split, time_column, label_column, drop_columns, strict_time)


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


# ----------------------------------------------------------------------------- cutting


class _Split:
    """A file cut into cells: byte ranges [starts, ends) into one buffer, and per row its
    line number. starts, ends: [rows, columns] int32 (int64 for files over 2 GiB);
    row_lines: [rows] int64."""

    def __init__(self, path: str, names: list[str], data: bytes,
                 starts: np.ndarray, ends: np.ndarray, row_lines: np.ndarray):
        self.path = path
        self.names = names
        self.data = data
        self.arr = np.frombuffer(data, dtype=np.uint8)
        self.starts = starts
        self.ends = ends
        self.rows = len(row_lines)
        self.row_lines = row_lines

    def cells(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(self.starts[:, j]), np.ascontiguousarray(self.ends[:, j])

    def text(self, starts: np.ndarray, ends: np.ndarray, i: int) -> str:
        return self.data[starts[i]:ends[i]].decode("utf-8", "replace")

    def fail(self, row: int, column: str, message: str) -> DataError:
        return DataError(f"{self.path}, line {int(self.row_lines[row])}, column {column!r}: {message}")


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


def _ragged(path: str, line: int, cells: int, names: list[str]) -> DataError:
    detail = (f"no cell for column {names[cells]!r}" if cells < len(names)
              else f"extra cell after column {names[-1]!r}")
    return DataError(f"{path}, line {line}: {cells} cells, but the header has "
                     f"{len(names)} columns ({detail})")


def _split_fast(path: str, data: bytes, delimiter: str, parity: bool) -> _Split | None:
    """Cut the file with vectorised byte scans (data ends with a newline).

    Without `parity` every delimiter and newline ends a cell, which is right unless a
    quoted cell holds one: that shows as a ragged row or a quote count that does not
    add up, and gives None. With `parity`, a delimiter or newline after an odd number of
    quotes is inside a quoted cell. None then means quoting that is not well formed
    (a quote in an unquoted cell, text after a closing quote, ...) or ragged rows in a
    file with quotes: the csv module cuts such files and words the error.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    quoted = b'"' in data
    parity = parity and quoted
    # Every cell's end (a delimiter or a newline outside quotes), in order; scanned a
    # cache-sized piece at a time, which is about twice as fast as whole-file temporaries.
    piece = 1 << 22
    is_sep, is_newline = np.empty(piece, dtype=bool), np.empty(piece, dtype=bool)
    offset_type = _offset_type(len(data))
    found, newlines = [], []
    odd = 0  # quotes so far, mod 2
    for a in range(0, len(arr), piece):
        chunk = arr[a:a + piece]
        sep, newline = is_sep[:len(chunk)], is_newline[:len(chunk)]
        np.equal(chunk, ord(delimiter), out=sep)
        np.equal(chunk, 10, out=newline)
        sep |= newline
        if parity:
            newlines.append((np.flatnonzero(newline) + a).astype(offset_type))
            inside = np.cumsum(chunk == 34, dtype=np.uint8)  # wraps around; the low bit holds
            inside += np.uint8(odd)
            inside &= 1
            odd = int(inside[-1])
            sep &= inside == 0
        found.append((np.flatnonzero(sep) + a).astype(offset_type))
    if odd:
        return None  # a quote left open
    seps = np.concatenate(found)
    line_ends_at = np.flatnonzero(arr[seps] == 10)  # which of them end a row
    header_end = int(seps[line_ends_at[0]])
    header_line = data[:header_end].decode("utf-8")
    if not header_line.strip():
        raise DataError(f"{path}, line 1: the header line is empty")
    try:
        header = next(csv.reader([header_line], delimiter=delimiter, strict=True))
    except csv.Error:
        return None
    names = _column_names(path, header)
    ncols = len(names)
    if line_ends_at[0] != ncols - 1:
        return None

    line_ends = seps[line_ends_at]
    blank = np.diff(line_ends) == 1
    per_line = np.diff(line_ends_at)  # cells on each body line (1 on a blank line)
    bad = np.flatnonzero(~blank & (per_line != ncols))
    if len(bad):
        if quoted:
            return None
        i = int(bad[0])
        raise _ragged(path, i + 2, int(per_line[i]), names)
    kept = np.flatnonzero(~blank)
    rows = len(kept)
    if rows == 0:
        raise DataError(f"{path}: no data rows after the header line")
    cell_ends = seps[line_ends_at[0] + 1:]
    if len(kept) < len(blank):
        cell_ends = np.delete(cell_ends, line_ends_at[1:][blank] - line_ends_at[0] - 1)
    ends = cell_ends.reshape(rows, ncols)
    starts = np.empty_like(ends)
    starts[:, 0] = line_ends[:-1][kept] + 1
    np.add(ends[:, :-1], 1, out=starts[:, 1:])
    if not quoted:
        return _Split(path, names, data, starts, ends, kept + 2)

    # Well-formed quoting: a quoted cell starts and ends with a quote and has its inner
    # quotes doubled; other cells have no quotes at all. Usually the quotes are just the
    # two around each quoted cell, which a count shows.
    wrapped = (ends - starts >= 2) & (arr[starts] == 34) & (arr[ends - 1] == 34)
    body_quotes = int(np.count_nonzero(arr[header_end:] == 34))
    if body_quotes != 2 * int(np.count_nonzero(wrapped)):
        if not parity:
            return None
        at = np.flatnonzero(arr[header_end:] == 34) + header_end
        flat_starts, flat_wrapped = starts.ravel(), wrapped.ravel()
        cell = np.searchsorted(flat_starts, at, side="right") - 1
        outer = flat_wrapped[cell] & ((at == flat_starts[cell]) | (at == ends.ravel()[cell] - 1))
        inner = at[~outer]
        if (len(inner) % 2 or (inner[1::2] - inner[0::2] != 1).any()
                or not flat_wrapped[cell[~outer]].all()):
            return None
    starts += wrapped
    ends = ends - wrapped
    # Quoted cells may hold line breaks: a row's line is 1 + the line breaks before it.
    if not parity or sum(map(len, newlines)) == len(line_ends):
        return _Split(path, names, data, starts, ends, kept + 2)
    newlines = np.concatenate(newlines)
    row_lines = np.searchsorted(newlines, starts[:, 0], side="left") + 1
    return _Split(path, names, data, starts, ends, row_lines.astype(np.int64))


def _split_csv(path: str, data: bytes, delimiter: str) -> _Split:
    """Cut the file with the csv module (any quoting, any line ends)."""
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter, strict=True)
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
        raise DataError(f"{path}, line {previous + 1}: bad CSV quoting ({e})") from None
    finally:
        if collecting:
            gc.enable()
    if lines[0] != 1 or not "".join(records[0]).strip():
        raise DataError(f"{path}, line 1: the header line is empty")
    names = _column_names(path, records[0])
    body = records[1:]
    if not body:
        raise DataError(f"{path}: no data rows after the header line")
    for i, record in enumerate(body):
        if len(record) != len(names):
            raise _ragged(path, lines[i + 1], len(record), names)

    # The cells, in file order, become one run of bytes with bounds, like the fast path's.
    encoded = [cell.encode("utf-8") for record in body for cell in record]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    ends = np.cumsum(lengths).astype(_offset_type(int(lengths.sum()))).reshape(len(body), len(names))
    starts = ends - lengths.reshape(ends.shape)
    return _Split(path, names, b"".join(encoded), starts, ends, np.asarray(lines[1:], dtype=np.int64))


def _offset_type(size: int):
    """Byte offsets as int32 where they fit: half the memory for the cell bounds."""
    return np.int32 if size < 2**31 - _MAX_TEXT else np.int64


def _strip(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell bounds moved past leading and trailing spaces and tabs."""
    while True:
        edge = arr.take(starts, mode="clip")
        move = (starts < ends) & ((edge == 32) | (edge == 9))
        if not move.any():
            break
        starts = starts + move
    while True:
        edge = arr.take(ends - 1, mode="clip")
        move = (starts < ends) & ((edge == 32) | (edge == 9))
        if not move.any():
            break
        ends = ends - move
    return starts, ends


def _gather(arr: np.ndarray, starts: np.ndarray, lens: np.ndarray, width: int) -> np.ndarray:
    """Cells as a position-major byte matrix [width, cells], zero past each cell's end."""
    n = len(starts)
    out = np.empty((width, n), dtype=np.uint8)
    # Blocks of cells whose bytes stay in cache across the `width` passes.
    span = (int(starts[-1]) - int(starts[0])) / n + 1 if n else 1
    block = int(min(max(_GATHER_BYTES / span, 4096), 1 << 16))
    shifted = [arr[p:] for p in range(width)]
    for a in range(0, n, block):
        index = starts[a:a + block]
        for p in range(width):
            shifted[p].take(index, out=out[p, a:a + block], mode="clip")
    out *= _POSITIONS[:width] < lens if width <= _MAX_CELL else np.arange(width)[:, None] < lens
    return out


# ----------------------------------------------------------------------------- numbers


def _decimal_block(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                   exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised parse of one block of number cells: values [n] float64, ok [n] bool.

    Takes [+-]digits[.digits][(e|E)[+-]digits] (digits on at least one side of the dot),
    i.e. _NUMBER, with at most 18 digits and a power of ten within +-22; everything else
    is left for a closer look (not ok). Empty cells are ok and NaN.

    The digits form an integer mantissa m (exact in int64) and the value is m * 10**p
    or m / 10**-p, with 10**|p| an exact double. When m <= 2**53 both operands are exact
    and the one rounding gives exactly float(cell); `exact` insists on that. Otherwise
    (16-18 digit mantissas) converting m rounds once more: within an ulp of float(cell),
    which is what a float32 sensor value can never tell apart (bar a tie, vanishingly
    rarely).
    """
    lens = ends - starts
    n = len(lens)
    empty = lens == 0
    width = int(min(lens.max(), _MAX_CELL)) if n else 0
    if width == 0:
        return np.full(n, np.nan), empty
    pos = _POSITIONS[:width]
    cells = _gather(arr, starts, lens, width)
    first = cells[0]
    negative = first == 45
    first[negative | (first == 43)] = 0  # a leading sign is not one of the digits
    digit = cells - np.uint8(48)  # wraps around for non-digits
    is_digit = digit < 10
    is_dot = cells == 46
    is_e = (cells | np.uint8(32)) == 101
    n_e = np.add.reduce(is_e, axis=0, dtype=np.uint8)
    has_e = n_e > 0
    good = (n_e <= 1) & (lens <= _MAX_CELL)
    if has_e.any():
        e_at = np.add.reduce(is_e * pos, axis=0, dtype=np.uint8)
        in_exp = (pos > e_at) & has_e
        sign_at = (pos == e_at + np.uint8(1)) & has_e
        exp_sign = sign_at & ((cells == 45) | (cells == 43))
        exp_negative = np.logical_or.reduce(sign_at & (cells == 45), axis=0)
        exp_digit = is_digit & in_exp
        is_digit &= ~in_exp
        is_dot &= ~in_exp  # a dot in the exponent is a stray character
        allowed = is_digit | is_dot | is_e | exp_sign | exp_digit
        n_exp_digits = np.add.reduce(exp_digit, axis=0, dtype=np.uint8)
        good &= ~has_e | ((n_exp_digits >= 1) & (n_exp_digits <= 4))
        exponent = np.zeros(n, dtype=np.int64)
        rows = np.flatnonzero(has_e)
        if len(rows) < n // 4:
            exponent[rows] = _horner(digit[:, rows], exp_digit[:, rows], np.int16)
        else:
            exponent[:] = _horner(digit, exp_digit, np.int16)
        np.negative(exponent, out=exponent, where=exp_negative)
        mantissa_end = np.where(has_e, e_at, lens)
    else:
        allowed = is_digit | is_dot
        exponent = 0
        mantissa_end = lens
    good &= ~np.logical_or.reduce(~allowed & (cells != 0), axis=0)
    n_digits = np.add.reduce(is_digit, axis=0, dtype=np.uint8)
    dots = np.add.reduce(is_dot, axis=0, dtype=np.uint8)
    good &= (dots <= 1) & (n_digits >= 1) & (n_digits <= 18)
    # With one dot and only digits after it, the fraction digits are all after the dot.
    dot_at = np.add.reduce(is_dot * pos, axis=0, dtype=np.uint8)
    power = exponent - np.where(dots == 1, mantissa_end - 1 - dot_at, 0)
    mant = _horner(digit, is_digit, np.int64)
    good &= (power >= -22) & (power <= 22)
    if exact:
        good &= mant <= _DIGIT_LIMIT
    values = mant.astype(np.float64)
    if (power <= 0).all():
        values /= _POW10[np.minimum(-power, 22)]
    else:
        values = np.where(power >= 0, values * _POW10[np.clip(power, 0, 22)],
                          values / _POW10[np.clip(-power, 0, 22)])
    np.negative(values, out=values, where=negative)
    values[empty] = np.nan
    return values, good | empty


def _horner(digit: np.ndarray, use: np.ndarray, dtype) -> np.ndarray:
    """The integer spelled by the digits where `use` is set, read down the positions:
    digit, use [width, n] -> [n] (wraps around when too long; callers bound the count)."""
    add = digit * use
    scale = use * np.uint8(9) + np.uint8(1)  # 10 at a used digit, 1 elsewhere
    acc = np.zeros(digit.shape[1], dtype=dtype)
    for d, s in zip(add, scale):
        acc *= s
        acc += d
    return acc


def _fast_numbers(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                  exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """_decimal_block over any number of cells, a cache-sized block at a time."""
    n = len(starts)
    values = np.empty(n, dtype=np.float64)
    ok = np.empty(n, dtype=bool)
    for a in range(0, n, _CHUNK):
        b = a + _CHUNK
        values[a:b], ok[a:b] = _decimal_block(arr, starts[a:b], ends[a:b], exact)
    return values, ok


def _numbers(split: _Split, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_fast_numbers, then the cells it left: without surrounding whitespace, and the
    missing-value words (`nan`, `null`, any case), still vectorised."""
    values, ok = _fast_numbers(split.arr, starts, ends)
    retry = np.flatnonzero(~ok)
    if len(retry):
        s, e = _strip(split.arr, starts[retry], ends[retry])
        again, fine = _fast_numbers(split.arr, s, e)
        lens = e - s
        word = _gather(split.arr, s, lens, 4) | np.uint8(32)  # ASCII letters to lower case
        missing = (((lens == 3) & (word == _NAN_WORD).all(axis=0))
                   | ((lens == 4) & (word == _NULL_WORD).all(axis=0)))
        again[missing] = np.nan
        values[retry], ok[retry] = again, fine | missing
    return values, ok


def _cell_number(text: str) -> float | None:
    """Per-cell parse: a float (NaN for a missing-value token), None if not a number."""
    t = text.strip()
    if t.lower() in MISSING:
        return math.nan
    return float(t) if _NUMBER.fullmatch(t) else None


def _sensor_values(split: _Split, cols: list[int]) -> np.ndarray:
    """The sensor columns as [rows, len(cols)] float32, NaN where missing.

    Parsed together in file order (row by row), which keeps memory access local and
    makes a DataError name the first bad cell in the file.
    """
    starts = np.take(split.starts, cols, axis=1).ravel()
    ends = np.take(split.ends, cols, axis=1).ravel()
    values, ok = _numbers(split, starts, ends)
    seen: dict[str, float | None] = {}
    for i in np.flatnonzero(~ok).tolist():
        text = split.text(starts, ends, i)
        if text not in seen:
            seen[text] = _cell_number(text)
        value = seen[text]
        if value is None:
            raise split.fail(i // len(cols), split.names[cols[i % len(cols)]], f"not a number: {text!r}")
        values[i] = value
    with np.errstate(over="ignore"):  # reported just below, with its cell
        narrow = values.astype(np.float32)
    too_big = np.flatnonzero(np.isinf(narrow))
    if len(too_big):
        i = int(too_big[0])
        raise split.fail(i // len(cols), split.names[cols[i % len(cols)]],
                         f"number out of range: {split.text(starts, ends, i)!r}")
    return narrow.reshape(split.rows, len(cols))


def _label_column(split: _Split, j: int) -> np.ndarray:
    starts, ends = split.cells(j)
    values, ok = _numbers(split, starts, ends)
    for i in np.flatnonzero(~ok).tolist():
        value = _cell_number(split.text(starts, ends, i))
        values[i] = math.nan if value is None else value
    bad = np.flatnonzero((values != 0) & (values != 1))
    if len(bad):
        i = int(bad[0])
        raise split.fail(i, split.names[j], f"label must be 0 or 1, not {split.text(starts, ends, i)!r}")
    return values.astype(np.int8)


# ----------------------------------------------------------------------------- time


def _texts(split: _Split, starts: np.ndarray, ends: np.ndarray) -> tuple[list[str], np.ndarray | None]:
    """The cells as str, plus (when narrow enough) their byte matrix from _gather."""
    lens = ends - starts
    width = int(lens.max())
    if 0 < width <= _MAX_TEXT:
        cells = _gather(split.arr, starts, lens, width)
        # Cell bytes + "\n" per row, padding zeros dropped, one decode, one split.
        joined = np.empty((len(lens), width + 1), dtype=np.uint8)
        joined[:, :width] = cells.T
        joined[:, width] = 10
        joined = joined if (lens == width).all() else joined[joined != 0]
        texts = joined.tobytes().decode("utf-8", "replace").split("\n")
        if len(texts) == len(lens) + 1:  # no cell held a line break
            return texts[:-1], cells
    else:
        cells = None
    data = split.data
    return [data[a:b].decode("utf-8", "replace") for a, b in zip(starts.tolist(), ends.tolist())], cells


def _time_column(split: _Split, j: int) -> tuple[list[str], np.ndarray]:
    """Column j's cells (stripped) and epoch seconds; DataError at the first bad cell."""
    name = split.names[j]
    starts, ends = _strip(split.arr, *split.cells(j))
    raw, cells = _texts(split, starts, ends)
    first = raw[0]
    if first.lower() in MISSING:
        raise split.fail(0, name, "missing timestamp")
    if _NUMBER.fullmatch(first):
        values, ok = _fast_numbers(split.arr, starts, ends, exact=True)
        for i in np.flatnonzero(~ok | np.isnan(values)).tolist():
            values[i] = _epoch_cell(split, i, name, raw[i])
        if values[0] > EPOCH_MS_THRESHOLD:
            values /= 1000.0
        return raw, values

    values = np.empty(split.rows, dtype=np.float64)
    done = np.zeros(split.rows, dtype=bool)
    layout = _ISO_LAYOUT.fullmatch(first)
    if layout is not None and cells is not None:
        values[0] = _iso_cell(split, 0, name, first)  # checks the layout's own validity
        done = _fast_iso(cells, ends - starts, layout, values)
    for i in np.flatnonzero(~done).tolist():
        values[i] = _iso_cell(split, i, name, raw[i])
    return raw, values


def _epoch_cell(split: _Split, i: int, name: str, text: str) -> float:
    value = _cell_number(text)
    if value is not None and math.isnan(value):
        raise split.fail(i, name, "missing timestamp")
    if value is None or math.isinf(value):
        raise split.fail(i, name, f"not a timestamp: {text!r} (the first row has a plain "
                                  "number, so the column is read as epoch time)")
    return value


def _iso_cell(split: _Split, i: int, name: str, text: str) -> float:
    if text.lower() in MISSING:
        raise split.fail(i, name, "missing timestamp")
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise split.fail(i, name, f"not a timestamp: {text!r} (expected ISO-8601 like "
                                  "2020-02-08 13:30:47, or epoch seconds)") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    delta = stamp - _EPOCH
    return float(delta.days * 86400 + delta.seconds) + delta.microseconds / 1e6


def _fast_iso(cells: np.ndarray, lens: np.ndarray, layout: re.Match, out: np.ndarray) -> np.ndarray:
    """Decode the timestamps laid out exactly like the first one (cells: [width, rows]
    from _gather) into `out`, with the arithmetic of _iso_cell. Returns the rows done."""
    width = layout.end()
    same = lens == width
    for p in range(width):
        ch = int(cells[p, 0])
        if 48 <= ch <= 57:
            same &= (cells[p] - np.uint8(48)) < 10
        else:
            same &= cells[p] == ch

    def number(group: int) -> np.ndarray:
        acc = np.zeros(len(lens), dtype=np.int64)
        a, b = layout.span(group)
        for p in range(max(a, 0), max(b, 0)):
            acc *= 10
            acc += cells[p]
            acc -= 48
        return acc

    year, month, day = number(1), number(2), number(3)
    hour, minute, second = number(4), number(5), number(6)
    fraction = layout.group(7) or ""
    micro = number(7) * 10 ** (6 - len(fraction))
    offset = 0
    if layout.group(9):
        oh, om = number(10), number(11)
        same &= (oh <= 23) & (om <= 59)
        offset = (oh * 3600 + om * 60) * (1 if layout.group(9) == "+" else -1)

    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 0, 12)]
    month_days += leap & (month == 2)
    same &= ((year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
             & (hour <= 23) & (minute <= 59) & (second <= 59))
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * np.where(month > 2, month - 3, month + 9) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset
    out[same] = seconds[same].astype(np.float64) + micro[same] / 1e6
    return same


# ----------------------------------------------------------------------------- assembly


def _build(split: _Split, time_column, label_column, drop_columns, strict_time: bool) -> SensorTable:
    path, names = split.path, split.names
    index = {name: j for j, name in enumerate(names)}

    def column(name: str, option: str) -> int:
        if name not in index:
            raise DataError(f"{path}, line 1, column {name!r}: no such column (named by {option}); "
                            f"the header has {', '.join(map(repr, names))}")
        return index[name]

    if isinstance(drop_columns, str):
        drop_columns = [drop_columns]
    dropped = {column(name, "drop_columns") for name in drop_columns}
    t = 0 if time_column is None else column(time_column, "time_column")
    if t in dropped:
        raise DataError(f"{path}, line 1, column {names[t]!r}: the time column cannot be dropped")
    if label_column is None:
        label = index.get(DEFAULT_LABEL)
        if label in dropped or label == t:
            label = None
    else:
        label = column(label_column, "label_column")
        if label in dropped or label == t:
            clash = "dropped" if label in dropped else "the time column"
            raise DataError(f"{path}, line 1, column {label_column!r}: the label column cannot be {clash}")
    sensor_cols = [j for j in range(len(names)) if j not in dropped and j != t and j != label]
    if not sensor_cols:
        others = [f"time column {names[t]!r}"]
        if label is not None:
            others.append(f"label column {names[label]!r}")
        if dropped:
            others.append("dropped " + ", ".join(repr(names[j]) for j in sorted(dropped)))
        raise DataError(f"{path}, line 1: no sensor columns ({'; '.join(others)})")

    time_raw, time = _time_column(split, t)
    if strict_time:
        back = np.flatnonzero(time[1:] < time[:-1])
        if len(back):
            i = int(back[0]) + 1
            raise split.fail(i, names[t], f"time goes backwards: {time_raw[i]!r} is earlier than "
                                          f"{time_raw[i - 1]!r} on line {int(split.row_lines[i - 1])}")
    values = _sensor_values(split, sensor_cols)
    labels = None if label is None else _label_column(split, label)
    sensors = tuple(names[j] for j in sensor_cols)
    # the daemon's rule: a row counts only when its time is after every row kept before it
    late = np.r_[False, time[1:] <= np.maximum.accumulate(time)[:-1]] if not strict_time and len(time) else None
    if late is None or not late.any():
        return SensorTable(path=path, time_raw=time_raw, time=time, sensors=sensors, values=values, labels=labels)
    index = np.flatnonzero(late)
    kept = np.flatnonzero(~late)
    newest = kept[np.searchsorted(kept, index) - 1]  # row 0 is always kept; kept rows increase
    skipped = SkippedRows(index=index, time_raw=[time_raw[i] for i in index.tolist()],
                          lines=np.asarray(split.row_lines[index], np.int64), time=time[index],
                          values=values[index], labels=None if labels is None else labels[index],
                          newest_raw=[time_raw[i] for i in newest.tolist()],
                          newest_lines=np.asarray(split.row_lines[newest], np.int64))
    return SensorTable(path=path, time_raw=[time_raw[i] for i in kept.tolist()], time=time[kept], sensors=sensors,
                       values=values[kept], labels=None if labels is None else labels[kept], skipped=skipped)
