"""Tests of detector.csvdata on small CSV files written into tmp_path."""

from __future__ import annotations

import csv
import io
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.csvdata import read_csv
from detector.datafiles import read_path
from detector.table import DataError, SensorTable, admit_late

T0 = 1581168647.0  # 2020-02-08 13:30:47 UTC
# Property tests write files into tmp_path, shared by all examples (fine: each
# example overwrites its file). No example database in the repository.
PROPERTY = settings(deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def assert_located(error: pytest.ExceptionInfo, path: str, line: int | None, column: str | None,
                   fragment: str) -> None:
    """The message starts with 'path, line N, column 'C':' (or the parts that apply)."""
    message = str(error.value)
    prefix = path + (f", line {line}" if line is not None else "")
    prefix += f", column {column!r}:" if column is not None else ":"
    assert message.startswith(prefix), message
    assert fragment in message, message


# ----------------------------------------------------------------------------- layout


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiters(tmp_path, delimiter):
    rows = [["time", "a", "b"], ["2020-02-08 13:30:47", "1.5", "-2"], ["2020-02-08 13:30:48", "3", "4e2"]]
    path = write(tmp_path, "x.csv", "\n".join(delimiter.join(r) for r in rows) + "\n")
    table = read_csv(path)
    assert table.path == path
    assert table.sensors == ("a", "b")
    assert table.time_raw == ["2020-02-08 13:30:47", "2020-02-08 13:30:48"]
    np.testing.assert_array_equal(table.time, [T0, T0 + 1])
    assert table.values.dtype == np.float32 and table.time.dtype == np.float64
    np.testing.assert_array_equal(table.values, [[1.5, -2.0], [3.0, 400.0]])
    assert table.labels is None


SKAB = (
    "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;"
    "Thermocouple;Voltage;Volume Flow RateRMS;anomaly;changepoint\n"
    "2020-02-08 13:30:47;0.202394;0.275154;2.16975;0.382638;90.6454;26.8508;218.143;36.0;0.0;0.0\n"
    "2020-02-08 13:30:48;0.203153;0.277857;2.07999;-0.273216;90.7978;26.8639;233.172;32.0;1.0;1.0\n"
    "2020-02-08 13:30:50;0.202054;0.27579;2.52577;0.382638;90.7977;26.8603;226.505;32.0;1;0\n"
)


def test_skab_layout_labels_and_drop(tmp_path):
    path = write(tmp_path, "1.csv", SKAB)
    table = read_csv(path, drop_columns=["changepoint"])
    assert table.sensors == ("Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure",
                             "Temperature", "Thermocouple", "Voltage", "Volume Flow RateRMS")
    assert table.labels.dtype == np.int8
    np.testing.assert_array_equal(table.labels, [0, 1, 1])
    np.testing.assert_array_equal(table.time, [T0, T0 + 1, T0 + 3])
    assert table.values.shape == (3, 8)
    np.testing.assert_array_equal(table.values[:, 3], np.float32([0.382638, -0.273216, 0.382638]))
    # Without drop_columns, changepoint is just another (numeric) sensor.
    assert read_csv(path).sensors[-1] == "changepoint"


def test_label_column_choices(tmp_path):
    path = write(tmp_path, "x.csv", "t,a,anomaly,label\n1,2,0,1\n2,3,1,0\n")
    assert read_csv(path).sensors == ("a", "label")  # "anomaly" by default
    table = read_csv(path, label_column="label")
    assert table.sensors == ("a", "anomaly")
    np.testing.assert_array_equal(table.labels, [1, 0])
    table = read_csv(path, drop_columns=["anomaly"])  # a dropped "anomaly" is no label
    assert table.sensors == ("a", "label") and table.labels is None


def test_time_column_by_name(tmp_path):
    path = write(tmp_path, "x.csv", "a;stamp;b\n1;2020-02-08T13:30:47Z;2\n3;2020-02-08T13:30:49Z;4\n")
    table = read_csv(path, time_column="stamp")
    assert table.sensors == ("a", "b")
    np.testing.assert_array_equal(table.time, [T0, T0 + 2])
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4]])


def test_missing_values_become_nan(tmp_path):
    text = "t,a,b\n1,,1.25\n2,nan,NaN\n3,NAN,null\n4,NULL, \n5, nan ,7\n"
    values = read_csv(write(tmp_path, "x.csv", text)).values
    expected = np.array([[np.nan, 1.25], [np.nan, np.nan], [np.nan, np.nan], [np.nan, np.nan],
                         [np.nan, 7]], dtype=np.float32)
    np.testing.assert_array_equal(values, expected)  # NaN == NaN here, 0.0 != NaN


def test_quoted_cells(tmp_path):
    # Whole-cell quotes everywhere (as R and some loggers write them).
    text = '"time","a","b"\n"2020-02-08 13:30:47","1.5",""\n"2020-02-08 13:30:48","2","-3"\n'
    table = read_csv(write(tmp_path, "q.csv", text))
    assert table.sensors == ("a", "b")
    assert table.time_raw == ["2020-02-08 13:30:47", "2020-02-08 13:30:48"]
    np.testing.assert_array_equal(table.values, np.float32([[1.5, np.nan], [2, -3]]))


def test_quoted_delimiters_line_breaks_and_escapes(tmp_path):
    # A note column with a quoted delimiter, an escaped quote and a line break inside a
    # cell: the csv module's job. Line numbers stay physical lines.
    text = ('time,"a,1",note\n'
            '1,1,"x, y"\n'
            '2,2,"say ""hi"""\n'
            '3,3,"two\nlines"\n'
            '4,oops,z\n')
    path = write(tmp_path, "q.csv", text)
    with pytest.raises(DataError) as e:
        read_csv(path, drop_columns=["note"])
    assert_located(e, path, 6, "a,1", "not a number: 'oops'")
    table = read_csv(write(tmp_path, "ok.csv", text.replace("oops", "5")), drop_columns=["note"])
    assert table.sensors == ("a,1",)
    np.testing.assert_array_equal(table.values[:, 0], [1, 2, 3, 5])


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ('time,a,note\n1,1,x\n2,2,"y"z\n3,3,w\n', 3, "bad CSV quoting (',' expected after '\"')"),
    ('time,a,note\n1,1,x\n2,2,"never closed\n3,3,w\n', 3, "bad CSV quoting (unexpected end of data)"),
])
def test_malformed_quoting(tmp_path, text, line, fragment):
    path = write(tmp_path, "q.csv", text)
    with pytest.raises(DataError) as e:
        read_csv(path, drop_columns=["note"])
    assert_located(e, path, line, None, fragment)


def test_quotes_the_csv_module_takes_as_text(tmp_path):
    # A quote inside an unquoted cell is just a character; old Mac line ends (CR only).
    table = read_csv(write(tmp_path, "q.csv", 'time,a,note\r1,1,5"\r2,2,x\r'), drop_columns=["note"])
    np.testing.assert_array_equal(table.values[:, 0], [1, 2])
    path = write(tmp_path, "bad.csv", 'time,a,note\r1,1,x\r2,2",y\r')
    with pytest.raises(DataError) as e:
        read_csv(path, drop_columns=["note"])
    assert_located(e, path, 3, "a", "not a number: '2\"'")


@settings(PROPERTY, max_examples=40)
@given(st.lists(st.text(alphabet=',;"\n xy1', max_size=6), min_size=1, max_size=12),
       st.sampled_from([",", ";"]), st.booleans())
def test_quoted_text_cells_round_trip(tmp_path, notes, delimiter, quote_all):
    # Whatever csv.writer makes of a text column, the numbers next to it and the line
    # numbers (quoted line breaks count) come out right.
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n",
                        quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writerow(["time", "note", "a"])
    for i, note in enumerate(notes):
        writer.writerow([i, note, "bad" if i == len(notes) - 1 else i / 4])
    text = out.getvalue()
    path = write(tmp_path, "q.csv", text)
    with pytest.raises(DataError) as e:
        read_csv(path, drop_columns=["note"])
    last_line = text.rstrip("\n").count("\n") + 1 - notes[-1].count("\n")
    assert_located(e, path, last_line, "a", "not a number: 'bad'")
    good = write(tmp_path, "good.csv", text.replace("bad", "-1"))
    table = read_csv(good, drop_columns=["note"])
    np.testing.assert_array_equal(table.values[:, 0], [i / 4 for i in range(len(notes) - 1)] + [-1])


def test_common_files_never_go_cell_by_cell(tmp_path, monkeypatch):
    # The reference path (csv module, per-cell parse) is correct but slow; usual files must
    # not need it: Arrow reads them.
    import detector.csvdata as csvdata

    def forbidden(*args):
        raise AssertionError("the reference path was used")

    monkeypatch.setattr(csvdata, "_Reference", forbidden)
    text = ('time;a;b;"note"\n'
            '"2020-02-08T13:30:47.000Z";1.5;;"x;y"\n'
            '"2020-02-08T13:30:48.000Z";nan;-2.5E-3;"say ""hi"""\n'
            '"2020-02-08T13:30:49.000Z"; NULL ;1e5;"two\nlines"\n'
            '"2020-02-08T13:30:50.000Z";NaN; 7 ;""\n')
    table = read_csv(write(tmp_path, "x.csv", text), drop_columns=["note"])
    np.testing.assert_array_equal(table.time, T0 + np.arange(4))
    np.testing.assert_array_equal(table.values, np.float32([[1.5, np.nan], [np.nan, -2.5e-3],
                                                            [np.nan, 1e5], [np.nan, 7]]))
    epoch = read_csv(write(tmp_path, "e.csv", "t,a\n1581168647.5,1\n1581168648,2\n"))
    np.testing.assert_array_equal(epoch.time, [T0 + 0.5, T0 + 1])


def test_line_ends_bom_blank_lines_and_no_final_newline(tmp_path):
    text = "\ufefftime,a\r\n1,1\r\n\r\n2,2\r\n3,x"
    path = write(tmp_path, "x.csv", text)
    with pytest.raises(DataError) as e:
        read_csv(path)
    assert_located(e, path, 5, "a", "not a number: 'x'")  # the blank line 3 still counts
    table = read_csv(write(tmp_path, "y.csv", text.replace("x", "3")))
    assert table.sensors == ("a",)
    np.testing.assert_array_equal(table.values[:, 0], [1, 2, 3])


def test_delimiter_ties_are_settled_by_the_next_line(tmp_path):
    assert read_csv(write(tmp_path, "x.csv", "time,a;b\n1,2\n")).sensors == ("a;b",)
    assert read_csv(write(tmp_path, "y.csv", "time;a,b\n1;2\n")).sensors == ("a,b",)


def test_whitespace_around_cells_and_names(tmp_path):
    text = "time , a ,b\n 2020-02-08 13:30:47 , 1.5 ,\t2\n"
    table = read_csv(write(tmp_path, "x.csv", text))
    assert table.sensors == ("a", "b")
    assert table.time_raw == ["2020-02-08 13:30:47"]
    np.testing.assert_array_equal(table.values, [[1.5, 2]])


def test_equal_timestamps_are_allowed_when_strict(tmp_path):
    table = read_csv(write(tmp_path, "x.csv", "t,a\n5,1\n5,2\n6,3\n"), strict_time=True)
    np.testing.assert_array_equal(table.time, [5, 5, 6])
    assert table.skipped is None


def test_rows_not_after_the_last_kept_row_are_skipped(tmp_path):
    # a clock stepping back 3 s (lines 5-7 repeat earlier times), then a repeated time (line 9)
    text = lines("t,a,anomaly", "1,10,0", "2,20,0", "3,30,1", "1.5,40,0", "2.5,50,1", "3,60,0", "4,70,0", "4,80,0",
                 "5,90,1")
    path = write(tmp_path, "x.csv", text)
    table = read_csv(path)
    np.testing.assert_array_equal(table.time, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(table.values[:, 0], [10, 20, 30, 70, 90])
    np.testing.assert_array_equal(table.labels, [0, 0, 1, 0, 1])
    assert table.time_raw == ["1", "2", "3", "4", "5"]
    s = table.skipped
    assert s.count == 4 and s.index.tolist() == [3, 4, 5, 7] and s.time_raw == ["1.5", "2.5", "3", "4"]
    assert (s.line, s.previous_line, s.previous) == (5, 4, "3")
    message = s.describe(table.path)
    assert message.startswith(f"{path}: skipped 4 rows") and "line 5: '1.5' is not after '3' on line 4" in message
    assert "--strict-time" in message


def test_rows_less_than_one_interval_late_are_put_back(tmp_path):
    # 1 s intervals: 2.5 (line 5) is 0.5 s late and counts at 3 s; 3 (line 6) repeats the newest
    # time and 1.5 (line 7) is 1.5 s late: both stay out; 3.2 after 4 (line 9) counts at 4 s
    text = lines("t,a,anomaly", "1,10,0", "2,20,0", "3,30,1", "2.5,40,1", "3,50,0", "1.5,60,0", "4,70,0",
                 "3.2,80,1", "5,90,0")
    table = admit_late(read_csv(write(tmp_path, "x.csv", text)), 1.0)
    assert table.late == 2
    np.testing.assert_array_equal(table.time, [1, 2, 3, 3, 4, 4, 5])
    np.testing.assert_array_equal(table.values[:, 0], [10, 20, 30, 40, 70, 80, 90])
    np.testing.assert_array_equal(table.labels, [0, 0, 1, 1, 0, 1, 0])
    assert table.time_raw == ["1", "2", "3", "2.5", "4", "3.2", "5"]  # as written
    s = table.skipped
    assert s.index.tolist() == [4, 5] and s.time_raw == ["3", "1.5"] and s.lines.tolist() == [6, 7]
    assert (s.line, s.previous_line, s.previous) == (6, 4, "3")
    assert admit_late(table, 1.0) is table  # nothing more to put back
    # a 0.5 s interval: 2.5 is 0.5 s late (not less), 3.2 is 0.8 s: nothing is put back
    assert admit_late(read_csv(write(tmp_path, "y.csv", text)), 0.5).late == 0
    # a model without an interval takes no late row
    assert admit_late(read_csv(write(tmp_path, "z.csv", text)), None).skipped.count == 4


def test_a_clean_file_skips_nothing(tmp_path):
    assert read_csv(write(tmp_path, "x.csv", lines("t,a", "1,1", "2,2"))).skipped is None


# ----------------------------------------------------------------------------- errors


def lines(*rows: str) -> str:
    return "\n".join(rows) + "\n"


ERRORS = [
    # (file text, options, line, column, message fragment)
    (lines("time,a,b", "1,1,2", "2,1,abc"), {}, 3, "b", "not a number: 'abc'"),
    (lines("time,a,b", "1,inf,2"), {}, 2, "a", "not a number: 'inf'"),
    (lines("time,a,b", "1,1,2", "2,1,-Infinity"), {}, 3, "b", "not a number: '-Infinity'"),
    (lines("time,a,b", "1,1,2", "2,1,1_000"), {}, 3, "b", "not a number: '1_000'"),
    (lines("time,a,b", "1,1,2", "2,1,0x1F"), {}, 3, "b", "not a number: '0x1F'"),
    (lines("time,a,b", "1,1,2", "2,1,1e39"), {}, 3, "b", "out of range: '1e39'"),
    (lines("time,a,status", "1,1,ok"), {}, 2, "status", "not a number: 'ok'"),
    (lines("time,a,b", "3,1,2", "4,1,2", "3.5,1,2"), {"strict_time": True}, 4, "time", "time goes backwards: '3.5'"),
    (lines("time,a", "2020-02-08 13:30:47,1", "2020-02-08 13:30:46,1"), {"strict_time": True}, 3, "time",
     "backwards"),
    (lines("time,a", "2020-02-08 13:30:47,1", "yesterday,1"), {}, 3, "time", "not a timestamp: 'yesterday'"),
    (lines("time,a", "2020-02-08 13:30:47,1", "2020-02-30 00:00:00,1"), {}, 3, "time", "not a timestamp"),
    (lines("time,a", "2021-02-29 00:00:00,1"), {}, 2, "time", "not a timestamp"),
    (lines("time,a", "2020-02-08 13:30:47,1", "2020-02-08 24:00:00,1"), {}, 3, "time", "not a timestamp"),
    (lines("time,a", "2020-02-08 13:30:47,1", ",1"), {}, 3, "time", "missing timestamp"),
    (lines("time,a", "100,1", "abc,1"), {}, 3, "time", "not a timestamp: 'abc'"),
    (lines("time,a", "100,1", "nan,1"), {}, 3, "time", "missing timestamp"),
    (lines("time,a,anomaly", "1,1,0", "2,1,2"), {}, 3, "anomaly", "label must be 0 or 1, not '2'"),
    (lines("time,a,anomaly", "1,1,0", "2,1,"), {}, 3, "anomaly", "label must be 0 or 1, not ''"),
    (lines("time,a,anomaly", "1,1,0.5"), {}, 2, "anomaly", "label must be 0 or 1"),
    (lines("time,a,anomaly", "1,1,yes"), {}, 2, "anomaly", "label must be 0 or 1"),
    (lines("time,a", "1,1"), {"label_column": "label"}, 1, "label", "no such column"),
    (lines("time,a", "1,1"), {"time_column": "stamp"}, 1, "stamp", "no such column"),
    (lines("time,a", "1,1"), {"drop_columns": ["changepoint"]}, 1, "changepoint", "no such column"),
    (lines("time,a", "1,1"), {"drop_columns": ["time"]}, 1, "time", "cannot be dropped"),
    (lines("time,a,a", "1,1,2"), {}, 1, "a", "duplicate column name"),
]


@pytest.mark.parametrize(("cell", "problem"), [
    *[(cell, "not a number") for cell in [
        "1e", "1e+", "e5", "E", "1.2.3", "--1", "+-1", "+", "-", ".", "..5", "1e5.5", "1ee5",
        "1e5e5", "1,5", "0x10", "1 2", "\u0661", "Infinity", "-nan", "none", "n/a", "1e-"]],
    *[(cell, "number out of range") for cell in ["1e99999", "1e39", "-3.5e38", "1" + "0" * 40]],
])
def test_not_numbers(tmp_path, cell, problem):
    path = write(tmp_path, "x.csv", f"t;a;b\n1;1;2\n2;3;{cell}\n")
    with pytest.raises(DataError) as e:
        read_csv(path)
    assert_located(e, path, 3, "b", f"{problem}: {cell!r}")


@pytest.mark.parametrize(("text", "options", "line", "column", "fragment"), ERRORS)
def test_cell_errors_name_file_line_and_column(tmp_path, text, options, line, column, fragment):
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(DataError) as e:
        read_csv(path, **options)
    assert_located(e, path, line, column, fragment)


@pytest.mark.parametrize(("text", "line", "fragment"), [
    (lines("time,a,b", "1,1,2", "2,1"), 3, "2 cells, but the header has 3 columns (no cell for column 'b')"),
    (lines("time,a,b", "1,1,2,3"), 2, "4 cells, but the header has 3 columns (extra cell after column 'b')"),
    (lines("time,a,b", "1,1,2", "", "2,1"), 4, "no cell for column 'b'"),  # blank lines count
    (lines('time,a,"b"', '1,1,"2,5"', "2,1"), 3, "no cell for column 'b'"),  # via the csv module
])
def test_ragged_rows(tmp_path, text, line, fragment):
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(DataError) as e:
        read_csv(path)
    assert_located(e, path, line, None, fragment)


@pytest.mark.parametrize(("text", "options", "fragment"), [
    (lines("time,anomaly", "1,0"), {}, "no sensor columns (time column 'time'; label column 'anomaly')"),
    (lines("time,a", "1,1"), {"drop_columns": ["a"]}, "no sensor columns (time column 'time'; dropped 'a')"),
    (lines("time", "1"), {}, "no sensor columns (time column 'time')"),
    (lines("time,,b", "1,2,3"), {}, "column 2 has no name"),
])
def test_header_errors(tmp_path, text, options, fragment):
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(DataError) as e:
        read_csv(path, **options)
    assert_located(e, path, 1, None, fragment)


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "empty file"),
    ("\n \n", "empty file"),
    ("time,a\n", "no data rows"),
    ("time,a\n\n\n", "no data rows"),
])
def test_empty_files(tmp_path, text, fragment):
    path = write(tmp_path, "empty.csv", text)
    with pytest.raises(DataError) as e:
        read_csv(path)
    assert_located(e, path, None, None, fragment)


def test_error_far_into_a_large_file_names_the_right_line(tmp_path):
    # Over one block of the vectorised parser: the bad cell is in a later block.
    n = 70_000
    body = [f"{i},{i % 7}.5,{i % 3}" for i in range(n)]
    body[n - 2] = f"{n - 2},{(n - 2) % 7}.5,bad"
    path = write(tmp_path, "big.csv", "t,a,b\n" + "\n".join(body) + "\n")
    with pytest.raises(DataError) as e:
        read_csv(path)
    assert_located(e, path, n, "b", "not a number: 'bad'")
    body[n - 2] = f"{n - 2},{(n - 2) % 7}.5,2"
    table = read_csv(write(tmp_path, "good.csv", "t,a,b\n" + "\n".join(body) + "\n"))
    assert table.values.shape == (n, 2)
    np.testing.assert_array_equal(table.values[:, 0], (np.arange(n) % 7) + 0.5)
    np.testing.assert_array_equal(table.time, np.arange(n))


# ----------------------------------------------------------------------------- time


@pytest.mark.parametrize(("cells", "expected"), [
    (["1581168647", "1581168648"], [T0, T0 + 1]),  # epoch seconds
    (["1581168647.25", "1581168647.5"], [T0 + 0.25, T0 + 0.5]),
    (["1581168647123", "1581168648000"], [T0 + 0.123, T0 + 1]),  # epoch milliseconds
    (["0", "99999999999"], [0, 99999999999]),  # not above 1e11: still seconds
    (["-1", "1.5e9"], [-1, 1.5e9]),
])
def test_epoch_timestamps(tmp_path, cells, expected):
    path = write(tmp_path, "x.csv", "t,a\n" + "".join(f"{c},1\n" for c in cells))
    table = read_csv(path)
    assert table.time_raw == cells
    np.testing.assert_array_equal(table.time, expected)


@pytest.mark.parametrize(("stamp", "expected"), [
    ("2020-02-08 13:30:47", T0),
    ("2020-02-08T13:30:47", T0),
    ("2020-02-08T13:30:47Z", T0),
    ("2020-02-08T13:30:47.250Z", T0 + 0.25),
    ("2020-02-08T14:30:47+01:00", T0),
    ("2020-02-08T08:00:47.5-05:30", T0 + 0.5),
    ("2020-02-08T14:30:47+0100", T0),
    ("2020-02-08 13:30:47.123456", T0 + 0.123456),
    ("2020-02-08T13:30", T0 - 47),
    ("2020-02-08", T0 - 13 * 3600 - 30 * 60 - 47),
    ("2026-11-23T19:00:00.123Z", 1795460400.123),
    ("2020-02-29T00:00:00Z", 1582934400.0),
    ("1969-12-31T23:59:59Z", -1.0),
])
def test_iso_timestamps(tmp_path, stamp, expected):
    # One row alone, and many rows in the same layout (the vectorised path) agree.
    single = read_csv(write(tmp_path, "one.csv", f"time,a\n{stamp},1\n"))
    assert single.time_raw == [stamp]
    assert single.time[0] == pytest.approx(expected, abs=1e-6)
    many = read_csv(write(tmp_path, "many.csv", "time,a\n" + f"{stamp},1\n" * 5), strict_time=True)  # equal times kept
    np.testing.assert_array_equal(many.time, np.full(5, single.time[0]))


def test_mixed_timestamp_layouts(tmp_path):
    stamps = ["2020-02-08T13:30:47Z", "2020-02-08T13:30:47.5Z", "2020-02-08T14:30:48+01:00",
              "2020-02-08 13:30:48.25", "2020-02-08T13:30:49.000001Z"]
    table = read_csv(write(tmp_path, "x.csv", "time,a\n" + "".join(f"{s},1\n" for s in stamps)))
    assert table.time_raw == stamps
    np.testing.assert_allclose(table.time - T0, [0, 0.5, 1, 1.25, 2.000001], atol=1e-6)


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("cell", [
    "0", "-0", "+7", "007", "1.", ".5", "-.5", "1e5", "1E-5", "-2.5e+3", "1.5e-30", "123456789012345678",
    "1234567890123456789012", "0.30000000000000004", "-1.2345678901234567e-05", "3.4e38", "1e-45",
])
def test_number_spellings(tmp_path, cell):
    values = read_csv(write(tmp_path, "x.csv", f"t,a\n1,{cell}\n")).values
    assert values[0, 0] == np.float32(float(cell))
    assert math.copysign(1, values[0, 0]) == math.copysign(1, float(cell))


def format_number(value: float, style: int) -> str:
    return [repr, "{:.6e}".format, "{:g}".format, "{:.3f}".format, "{:.9E}".format][style](value)


@settings(PROPERTY, max_examples=40)
@given(st.lists(st.tuples(st.floats(min_value=-1e30, max_value=1e30, allow_nan=False),
                          st.integers(0, 4)), min_size=1, max_size=60))
def test_numbers_match_float(tmp_path, cells):
    texts = [format_number(value, style) for value, style in cells]
    path = write(tmp_path, "n.csv", "t,a\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts)))
    got = read_csv(path).values[:, 0]
    want = np.array([float(t) for t in texts], dtype=np.float32)
    np.testing.assert_array_equal(got, want)


@settings(PROPERTY, max_examples=30)
@given(st.lists(st.integers(0, 2 * 10**12), min_size=1, max_size=40, unique=True),
       st.integers(0, 6))
def test_epoch_seconds_are_exact(tmp_path, stamps, decimals):
    texts = [f"{s / 10**decimals:.{decimals}f}" for s in sorted(stamps)]
    path = write(tmp_path, "t.csv", "t,a\n" + "".join(f"{t},1\n" for t in texts))
    table = read_csv(path)
    want = np.array([float(t) for t in texts])
    if want[0] > 1e11:
        want = want / 1000
    np.testing.assert_array_equal(table.time, want)


# ----------------------------------------------------------------------------- paths


def test_read_path_directory(tmp_path):
    for name, value in [("b.csv", 3), ("a2.csv", 2), ("a10.csv", 1), ("c_last.CSV", 4)]:
        write(tmp_path, name, f"t,a\n1,{value}\n")
    write(tmp_path, "notes.txt", "not a csv\n")
    write(tmp_path, "d.csv.bak", "t,a\n1,9\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "0.csv", "t,a\n1,0\n")  # not searched
    tables = read_path(tmp_path)
    expected = ["a10.csv", "a2.csv", "b.csv", "c_last.CSV"]  # by name, not by length
    assert [t.path for t in tables] == [str(tmp_path / name) for name in expected]
    assert [float(t.values[0, 0]) for t in tables] == [1.0, 2.0, 3.0, 4.0]


def test_read_path_single_file_and_missing_paths(tmp_path):
    path = write(tmp_path, "one.csv", "t,a\n1,2\n")
    [table] = read_path(path)
    assert table.path == path
    missing = str(tmp_path / "nope")
    with pytest.raises(DataError, match=re.escape(missing) + ": no such file"):
        read_path(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .csv files"):
        read_path(tmp_path / "empty")
    with pytest.raises(DataError, match=re.escape(missing) + ": cannot read"):
        read_csv(missing)


def test_read_path_passes_options(tmp_path):
    write(tmp_path, "a.csv", SKAB)
    write(tmp_path, "b.csv", SKAB)
    tables = read_path(tmp_path, drop_columns=["changepoint"])
    assert all(len(t.sensors) == 8 and t.labels is not None for t in tables)


# ----------------------------------------------------------------------------- table


def test_select(tmp_path):
    table = read_csv(write(tmp_path, "x.csv", "t,a,b,c\n1,1,2,3\n2,4,5,6\n"))
    picked = table.select(["c", "a"])
    np.testing.assert_array_equal(picked, [[3, 1], [6, 4]])
    assert picked.dtype == np.float32 and picked.flags.c_contiguous
    picked[0, 0] = 99  # a copy
    assert table.values[0, 2] == 3
    with pytest.raises(DataError) as e:
        table.select(["a", "Pressure", "d"])
    message = str(e.value)
    assert message.startswith(table.path) and "'Pressure', 'd'" in message


def test_sensor_table_checks_shapes():
    table = SensorTable("m.csv", ["1", "2"], [1.0, 2.0], ("a",), [[1.0], [2.0]], [0, 1])
    assert table.values.dtype == np.float32 and table.labels.dtype == np.int8 and table.rows == 2
    with pytest.raises(ValueError, match="values has shape"):
        SensorTable("m.csv", ["1", "2"], [1.0, 2.0], ("a", "b"), [[1.0], [2.0]], None)


# ----------------------------------------------------------------------------- the two paths


_CELLS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["", "nan", "NaN", "null", "NULL", " 7 ", " nan ", '"1.5"', "1e5", "-2.5E-3", ".5", "5.",
                     "+3", "1e999", "-nan", "inf", "x", "0x10", "1_0", '""']),
)
_TIMES = st.sampled_from([
    lambda i: f"2020-02-08T13:30:{i:02d}Z", lambda i: f"2020-02-08 13:30:{i:02d}",
    lambda i: f"2020-02-08T13:30:{i:02d}.250+01:00", lambda i: str(1581168647 + i),
    lambda i: str(1581168647000 + 250 * i), lambda i: f'"2020-02-08 13:30:{i:02d}"',
    lambda i: f"2020-02-08T13:30:{i:02d}" if i % 2 else f"2020-02-08T13:30:{i:02d}Z",
])


@settings(PROPERTY, max_examples=150)
@given(st.lists(st.tuples(_CELLS, _CELLS, st.sampled_from(["0", "1", " 1", "2", ""])), min_size=1, max_size=8),
       _TIMES, st.sampled_from([",", ";"]), st.booleans())
@pytest.mark.slow
def test_the_arrow_path_reads_as_the_reference_does(tmp_path, rows, stamp, delimiter, blank_line):
    """Whatever the file, read_csv (Arrow first) gives the reference path's table or its error."""
    import detector.csvdata as csvdata

    lines_ = [delimiter.join(["time", "a", "b", "anomaly"])]
    lines_ += [delimiter.join([stamp(i), a, b, label]) for i, (a, b, label) in enumerate(rows)]
    if blank_line:
        lines_.insert(2, "")
    path = write(tmp_path, "p.csv", "\n".join(lines_) + "\n")
    with open(path, "rb") as f:
        data = f.read()
    try:
        expected = csvdata._Reference(path, data, delimiter, None, None, ()).read()
    except DataError as e:
        with pytest.raises(DataError) as got:
            read_csv(path)
        assert str(got.value) == str(e)
        return
    table = read_csv(path)
    names, columns, time_raw, time, values, labels, _ = expected
    kept = table.skipped.index if table.skipped is not None else np.zeros(0, np.int64)
    keep = np.setdiff1d(np.arange(len(time)), kept)
    assert table.time_raw == [time_raw[i] for i in keep]
    np.testing.assert_array_equal(table.time, time[keep])
    np.testing.assert_array_equal(table.values, values[keep])
    np.testing.assert_array_equal(table.labels, labels[keep])
