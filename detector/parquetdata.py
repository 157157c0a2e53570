"""Reading sensor Parquet files into SensorTables (detector.table), with pyarrow.

The columns are what a CSV's are (detector.csvdata): a time column (the first, or
time_column), numeric sensor columns and optionally a 0/1 label column ("anomaly" or
label_column). The time column may be a timestamp (naive ones are UTC), a date, a number
(epoch seconds, or milliseconds when the first is over 1e11) or ISO-8601 text. Sensors may
be any integer, floating or boolean type; a null or NaN is a missing reading. Errors name
the file, the 1-based data row and the column:

    data/x.parquet, row 17, column 'Pressure': not a finite number: inf
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detector.csvdata import arrow_iso_seconds, epoch_seconds, iso_seconds, seconds_of_micros
from detector.table import DataError, SensorTable, choose_columns, in_time_order

__all__ = ["read_parquet"]


def read_parquet(path, *, time_column: str | None = None, label_column: str | None = None,
                 drop_columns: Sequence[str] = (), strict_time: bool = False) -> SensorTable:
    """Read one sensor Parquet file (options as csvdata.read_csv)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(path)
    try:
        schema = pq.read_schema(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    names = list(schema.names)
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{path}, column {twice!r}: duplicate column name")
    columns = choose_columns(path, names, time_column, label_column, drop_columns)
    used = [columns.time] + ([] if columns.label is None else [columns.label]) + columns.sensors
    try:
        table = pq.read_table(path, columns=[names[j] for j in used], use_threads=True)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read its data ({e})") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows")

    def fail(row: int, j: int, message: str) -> DataError:
        return DataError(f"{path}, row {row + 1}, column {names[j]!r}: {message}")

    time_raw, time = _time(pa, table.column(names[columns.time]), columns.time, fail)
    values = np.empty((table.num_rows, len(columns.sensors)), np.float32)
    for k, j in enumerate(columns.sensors):
        values[:, k] = _numbers(pa, table.column(names[j]), j, fail)
    labels = None
    if columns.label is not None:
        label = _numbers(pa, table.column(names[columns.label]), columns.label, fail)
        bad = np.flatnonzero((label != 0) & (label != 1))
        if len(bad):
            raise fail(int(bad[0]), columns.label, f"label must be 0 or 1, not {label[bad[0]]}")
        labels = label.astype(np.int8)
    return in_time_order(path, names[columns.time], time_raw, time, tuple(names[j] for j in columns.sensors),
                         values, labels, lambda rows: np.asarray(rows) + 1, strict_time, unit="row")


def _decoded(pa, column):
    """A dictionary-encoded column (as many writers store repeated text) as its plain values."""
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


def _numbers(pa, column, j: int, fail) -> np.ndarray:
    """A numeric or boolean column as float64, NaN for nulls; infinities and float32
    overflow are errors."""
    column = _decoded(pa, column)
    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
            or pa.types.is_decimal(kind)):
        raise fail(0, j, f"not a numeric column (its type is {kind})")
    values = column.cast(pa.float64()).to_numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        bad = np.flatnonzero(np.isinf(values.astype(np.float32)))
    if len(bad):
        raise fail(int(bad[0]), j, f"not a finite number: {values[bad[0]]}")
    return values


def _time(pa, column, j: int, fail) -> tuple[list[str], np.ndarray]:
    """The time column as written (ISO text for timestamps) and epoch seconds."""
    column = _decoded(pa, column)
    nulls = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))
    if len(nulls):
        raise fail(int(nulls[0]), j, "missing timestamp")
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        micros = column.cast(pa.timestamp("us", getattr(kind, "tz", None))).cast(pa.int64()).to_numpy()
        text = np.datetime_as_string(micros.astype("datetime64[us]"), unit="auto")
        zone = "Z" if getattr(kind, "tz", None) else ""
        return [f"{t}{zone}" for t in text.tolist()], seconds_of_micros(micros)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        seconds = column.cast(pa.float64()).to_numpy()
        bad = np.flatnonzero(~np.isfinite(seconds))
        if len(bad):
            raise fail(int(bad[0]), j, f"not a timestamp: {seconds[bad[0]]}")
        raw = [repr(int(s)) if s == int(s) else repr(s) for s in seconds.tolist()]
        return raw, epoch_seconds(seconds)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        import pyarrow.compute as pc

        stripped = pc.utf8_trim_whitespace(column)
        raw = stripped.to_pylist()
        seconds = arrow_iso_seconds(stripped)
        if seconds is None:  # mixed layouts, or a bad cell to name
            seconds = iso_seconds(raw, lambda i, message: fail(i, j, message))
        return raw, seconds
    raise fail(0, j, f"not a time column (its type is {kind}; expected a timestamp, epoch seconds or ISO text)")
