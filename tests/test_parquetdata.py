"""Parquet input (detector.parquetdata, detector.datafiles) and Parquet scores output."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from detector.csvdata import read_csv
from detector.datafiles import read_path
from detector.parquetdata import read_parquet
from detector.table import DataError
from vigil.cli import main

T0 = 1581168647  # 2020-02-08 13:30:47 UTC


def write(path, **columns):
    pq.write_table(pa.table(columns), path)
    return str(path)


def test_types_nulls_and_labels(tmp_path):
    path = write(tmp_path / "x.parquet",
                 time=pa.array(np.arange(4) * 1_000_000 + T0 * 1_000_000, pa.timestamp("us", "UTC")),
                 a=pa.array([1.5, None, float("nan"), 4.0]), b=pa.array([1, 2, 3, 4], pa.int16()),
                 on=pa.array([True, False, True, None]), anomaly=pa.array([0, 0, 1, 1], pa.int8()))
    table = read_parquet(path)
    assert table.sensors == ("a", "b", "on")
    np.testing.assert_array_equal(table.time, T0 + np.arange(4.0))
    assert table.time_raw[0] == "2020-02-08T13:30:47Z"
    np.testing.assert_array_equal(table.values, np.float32([[1.5, 1, 1], [np.nan, 2, 0], [np.nan, 3, 1],
                                                            [4, 4, np.nan]]))
    assert table.labels.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("time", [
    pa.array([T0, T0 + 1], pa.int64()),                            # epoch seconds
    pa.array([T0 * 1000, T0 * 1000 + 1000], pa.int64()),           # epoch milliseconds
    pa.array(["2020-02-08 13:30:47", "2020-02-08T13:30:48Z"]),     # ISO text, naive = UTC
    pa.array([T0 * 10**9, (T0 + 1) * 10**9], pa.timestamp("ns")),  # naive timestamps
    pa.array([T0 * 1000, (T0 + 1) * 1000], pa.timestamp("ms", "Europe/Berlin")),  # another zone
    pa.array(["2020-02-08T13:30:47Z", "2020-02-08T13:30:48Z"]).dictionary_encode(),  # dictionary text
])
def test_time_columns(tmp_path, time):
    table = read_parquet(write(tmp_path / "t.parquet", t=time, a=pa.array([1.0, 2.0])))
    np.testing.assert_array_equal(table.time, [T0, T0 + 1])


@pytest.mark.parametrize(("columns", "fragment"), [
    (dict(t=pa.array([T0, T0 + 1]), a=pa.array(["1", "x"])), "row 1, column 'a': not a numeric column"),
    (dict(t=pa.array([T0, None]), a=pa.array([1.0, 2.0])), "row 2, column 't': missing timestamp"),
    (dict(t=pa.array([T0, T0 + 1]), a=pa.array([1.0, float("inf")])), "row 2, column 'a': not a finite number"),
    (dict(t=pa.array([T0, T0 + 1]), a=pa.array([1.0, 2.0]), anomaly=pa.array([0, 2])),
     "row 2, column 'anomaly': label must be 0 or 1"),
    (dict(t=pa.array(["2020-02-08", "later"]), a=pa.array([1.0, 2.0])), "row 2, column 't': not a timestamp: 'later'"),
    (dict(t=pa.array([T0]), anomaly=pa.array([0])), "no sensor columns"),
])
def test_errors_name_the_row_and_column(tmp_path, columns, fragment):
    path = write(tmp_path / "bad.parquet", **columns)
    with pytest.raises(DataError) as e:
        read_parquet(path)
    assert str(e.value).startswith(path) and fragment in str(e.value)


def test_not_parquet_and_time_going_back(tmp_path):
    fake = tmp_path / "fake.parquet"
    fake.write_text("t,a\n1,2\n")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_parquet(fake)
    path = write(tmp_path / "back.parquet", t=pa.array([T0, T0 + 1, T0 - 5, T0 + 2]), a=pa.array([1.0, 2, 3, 4]))
    table = read_parquet(path)
    assert table.rows == 3 and "row 3" in table.skipped.describe(path) and "on row 2" in table.skipped.describe(path)
    with pytest.raises(DataError, match="row 3, column 't': time goes backwards"):
        read_parquet(path, strict_time=True)


def test_a_directory_holds_both_formats(tmp_path):
    (tmp_path / "a.csv").write_text("t,a\n1,2\n2,3\n")
    write(tmp_path / "b.parquet", t=pa.array([1, 2]), a=pa.array([4.0, 5.0]))
    (tmp_path / "notes.txt").write_text("ignored")
    tables = read_path(tmp_path)
    assert [t.path.rsplit("/", 1)[1] for t in tables] == ["a.csv", "b.parquet"]
    np.testing.assert_array_equal(tables[1].values[:, 0], [4, 5])


@pytest.mark.slow
def test_score_reads_and_writes_parquet_as_csv(tmp_path, normal_csv, faulty_csv):
    """The same rows as CSV and as Parquet give the same scores, in a CSV or a Parquet file."""
    toml = tmp_path / "tiny.toml"
    toml.write_text("[model]\nwindow = 8\nhidden = [16]\nlatent = 4\n[training]\nepochs = 2\n")
    model = tmp_path / "model"
    assert main(["train", "--data", str(normal_csv), "--out", str(model), "--config", str(toml), "--quiet"]) == 0
    table = read_csv(faulty_csv)
    columns = {"timestamp": pa.array(table.time_raw)}
    columns.update({name: pa.array(table.values[:, j]) for j, name in enumerate(table.sensors)})
    columns["anomaly"] = pa.array(table.labels)
    parquet_in = write(tmp_path / "faulty.parquet", **columns)
    for data, out in ((faulty_csv, "a.csv"), (parquet_in, "b.csv"), (faulty_csv, "c.parquet")):
        assert main(["score", "--model", str(model), "--data", str(data), "--out", str(tmp_path / out),
                     "--quiet"]) == 0
    with open(tmp_path / "a.csv") as f:
        a = list(csv.DictReader(f))
    with open(tmp_path / "b.csv") as f:
        b = list(csv.DictReader(f))
    assert a == b and len(a) == table.rows
    c = pq.read_table(tmp_path / "c.parquet").to_pylist()
    assert [r["timestamp"] for r in c] == [r["timestamp"] for r in a]
    assert [r["score"] for r in c] == [float(r["score"]) if r["score"] else None for r in a]
    assert [r["is_anomaly"] for r in c] == [int(r["is_anomaly"]) for r in a]
    assert sum(r["is_anomaly"] for r in c) > 0


def test_inspect_names_rows_of_a_parquet_file(tmp_path):
    from training.dataquality import inspect_tables

    t = T0 + np.arange(400.0)
    t[200:] -= 30  # the clock steps back 30 s at data row 201
    values = np.random.default_rng(0).normal(size=400)
    values[300] = 1e4  # far outside the bulk, data row 301
    path = write(tmp_path / "p.parquet", t=pa.array(t), a=values, b=np.random.default_rng(1).normal(size=400))
    report = inspect_tables([read_parquet(path)], window=10, validation_fraction=0.2, init_quantile=0.99)
    text = "\n".join(f.describe() for f in report.findings)
    assert "row 201:" in text and "after '1581168846' on row 200" in text
    assert "on row 301" in text and " line " not in text
