"""Data files by name: a CSV or Parquet file, or a directory of them, into SensorTables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from detector.table import DataError, SensorTable

__all__ = ["SUFFIXES", "data_files", "read_file", "read_path"]

SUFFIXES = (".csv", ".parquet")


def read_file(path, *, time_column: str | None = None, label_column: str | None = None,
              drop_columns: Sequence[str] = (), strict_time: bool = False) -> SensorTable:
    """One file, by its suffix: .parquet is Parquet (detector.parquetdata), anything else CSV
    (detector.csvdata)."""
    options = dict(time_column=time_column, label_column=label_column, drop_columns=drop_columns,
                   strict_time=strict_time)
    if Path(path).suffix.lower() == ".parquet":
        from detector.parquetdata import read_parquet

        return read_parquet(path, **options)
    from detector.csvdata import read_csv

    return read_csv(path, **options)


def data_files(path) -> list[Path]:
    """A file -> [it]; a directory -> its *.csv and *.parquet files, sorted by name (not
    searched recursively; other files in it are ignored)."""
    p = Path(path)
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.suffix.lower() in SUFFIXES and f.is_file()),
                       key=lambda f: f.name)
        if not files:
            raise DataError(f"{path}: no .csv files (nor .parquet) in this directory")
        return files
    if p.exists():
        return [p]
    raise DataError(f"{path}: no such file or directory")


def read_path(path, *, time_column: str | None = None, label_column: str | None = None,
              drop_columns: Sequence[str] = (), strict_time: bool = False) -> list[SensorTable]:
    """A file -> [its table]; a directory -> one table per data file in it (data_files).

    Each file stays its own table, so windows never span two files.
    """
    return [read_file(f, time_column=time_column, label_column=label_column, drop_columns=drop_columns,
                      strict_time=strict_time) for f in data_files(path)]
