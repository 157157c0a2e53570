"""vigil inspect and training.dataquality: a generated file with every problem, a clean file, the CLI."""

import json
import re
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from detector.csvdata import read_csv
from training.dataquality import format_text, inspect_tables, windows_needed
from vigil.cli import main

WINDOW = 60
START = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
ROWS = 1500  # kept rows: 1441 windows of 60, fewer than the 2,000 wanted
SENSORS = ("noise", "patchy", "constant", "stuck", "valve", "spiky", "hours")
STUCK = (300, 449)  # kept rows, inclusive: 150 readings of one value
SPIKES = (250, 700, 1300)
GAP_AFTER = 799  # kept rows 799 -> 800 are 121 s apart
JITTER = range(100, 300)
DUPLICATE_AFTER = 499  # a row repeating kept row 499's time follows it
BACKWARD_AFTER, BACKWARD_ROWS = 999, 4  # then 4 rows stepping back in time
LABELLED = (1400, 1449)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def line_of(i: int) -> int:
    """The file line of kept row i of the problem file (the header is line 1)."""
    return i + 2 + (i > DUPLICATE_AFTER) + BACKWARD_ROWS * (i > BACKWARD_AFTER)


def _cell(x: float) -> str:
    return "" if np.isnan(x) else f"{x:.6g}"


def write_problems(path):
    """A file with every problem vigil inspect looks for, at known rows."""
    rng = np.random.default_rng(7)
    t = START + np.arange(ROWS, dtype=np.float64)
    t[list(JITTER)] += np.where(np.arange(len(JITTER)) % 2 == 0, 0.2, -0.2)
    t[GAP_AFTER + 1:] += 120.0
    v = {
        "noise": rng.normal(10.0, 1.0, ROWS),
        "patchy": np.where(rng.random(ROWS) < 0.1, np.nan, rng.normal(0.0, 1.0, ROWS)),
        "constant": np.full(ROWS, 5.0),
        "stuck": rng.normal(0.0, 1.0, ROWS),
        "valve": (np.arange(ROWS) // 50 % 2).astype(float),
        "spiky": rng.normal(0.0, 1.0, ROWS),
        "hours": np.cumsum(rng.uniform(0.5, 1.5, ROWS)),
    }
    v["stuck"][STUCK[0]:STUCK[1] + 1] = 2.5
    v["spiky"][list(SPIKES)] = 1000.0
    labels = np.zeros(ROWS, int)
    labels[LABELLED[0]:LABELLED[1] + 1] = 1
    lines = ["timestamp," + ",".join(SENSORS) + ",anomaly"]

    def row(i: int, stamp: float) -> str:
        return ",".join([_iso(stamp)] + [_cell(v[s][i]) for s in SENSORS] + [str(labels[i])])

    for i in range(ROWS):
        lines.append(row(i, t[i]))
        if i == DUPLICATE_AFTER:
            lines.append(row(i, t[i]))
        if i == BACKWARD_AFTER:
            lines.extend(row(i, t[i] - 4.5 + k) for k in range(BACKWARD_ROWS))
    path.write_text("\n".join(lines) + "\n")
    return path, v


@pytest.fixture
def problems(tmp_path):
    return write_problems(tmp_path / "plant.csv")


@pytest.fixture
def clean_csv(tmp_path):
    rng = np.random.default_rng(3)
    n = 3000
    path = tmp_path / "clean.csv"
    rows = ["timestamp,a,b,c"] + [f"{_iso(START + i)},{a:.5f},{b:.5f},{c:.5f}" for i, (a, b, c) in
                                  enumerate(zip(rng.normal(5, 1, n), rng.normal(-2, 0.1, n), rng.normal(300, 20, n)))]
    path.write_text("\n".join(rows) + "\n")
    return path


def inspect(*paths, window=WINDOW):
    return inspect_tables([read_csv(p) for p in paths], window=window, validation_fraction=0.25, init_quantile=0.98)


def only(report, check, column=None):
    found = [f for f in report.findings if f.check == check and f.column == column]
    assert len(found) == 1, (check, column, [f.describe() for f in report.findings])
    return found[0]


def test_the_rule_of_thumb_for_enough_windows():
    # 10 peaks above the 98th percentile need 500 validation windows, a quarter of 2,000
    assert windows_needed(0.25, 0.98) == 2000
    assert windows_needed(0.2, 0.99) == 5000


def test_every_problem_is_found_with_its_column_and_line(problems):
    path, values = problems
    report = inspect(path)
    f = only(report, "missing", "patchy")
    first = int(np.flatnonzero(np.isnan(values["patchy"]))[0])
    assert f.severity == "warning" and f.lines[0] == line_of(first) and "% of readings missing" in f.message
    assert only(report, "constant", "constant").message.startswith("constant at 5 in all 1,500 readings")
    f = only(report, "flatline", "stuck")
    assert f.severity == "warning" and f.lines == (line_of(STUCK[0]), line_of(STUCK[1]))
    assert "2.5 repeated 150 times" in f.message and f.times[0] == _iso(START + STUCK[0])
    f = only(report, "categorical", "valve")
    assert f.severity == "note" and "binary: only 2 distinct values (0, 1)" in f.message
    f = only(report, "outliers", "spiky")
    assert f.lines == (line_of(SPIKES[0]), line_of(SPIKES[-1])) and f.message.startswith("3 readings far outside")
    assert f"the first 1000 on line {line_of(SPIKES[0])}" in f.message
    assert "rises in 1,499 steps" in only(report, "counter", "hours").message
    f = only(report, "gaps")
    assert f.severity == "warning" and f.lines == (line_of(GAP_AFTER), line_of(GAP_AFTER + 1))
    assert "the longest 2.02 min" in f.message
    f = only(report, "jitter")
    assert f.severity == "note" and "13.4% of spacings" in f.message
    assert line_of(JITTER[0] - 1) <= f.lines[0] < f.lines[1] <= line_of(JITTER[-1] + 1)
    f = only(report, "duplicate_times")
    assert f.lines == (line_of(DUPLICATE_AFTER) + 1,) * 2 and f.message.startswith("1 row repeat")
    f = only(report, "backward_times")
    assert f.lines == (line_of(BACKWARD_AFTER) + 1,) * 2 and f.message.startswith("4 rows step back")
    f = only(report, "labelled")
    assert f.lines[0] == line_of(LABELLED[0]) and "50 rows (3.3%) labelled anomalous" in f.message
    f = only(report, "windows")
    windows = LABELLED[0] - WINDOW + 1  # every window before the labelled rows; none fits after them
    assert report.windows == windows and not report.enough_windows
    assert f.message.startswith(f"{windows:,} windows of 60 readings without a labelled row in 1,500 rows: too few")
    # the clean sensor among them has nothing against it, and nothing is found twice
    assert not [f for f in report.findings if f.column == "noise"]
    assert len({(f.check, f.column) for f in report.findings}) == len(report.findings) == 12
    file = report.files[0]
    assert (file.rows, file.duplicate_times, file.backward_times, file.labelled_rows) == (ROWS, 1, 4, 50)


def test_the_lines_named_are_the_lines_of_the_file(problems):
    path, _ = problems
    text = path.read_text().splitlines()
    report = inspect(path)
    for f in report.findings:
        if f.lines is not None and f.times is not None:
            assert text[f.lines[0] - 1].startswith(f.times[0] + ","), f.describe()
            assert text[f.lines[1] - 1].startswith(f.times[1] + ","), f.describe()


def test_a_clean_file_gives_no_findings(clean_csv):
    report = inspect(clean_csv)
    assert report.findings == () and report.enough_windows and report.windows == 2941
    assert format_text(report).endswith("windows of 60 readings: 2,941 (enough; at least 2,000 wanted)\n\n"
                                        "0 warnings, 0 notes\n")


def test_values_the_training_part_never_saw_in_the_validation_part(tmp_path):
    # 2,000 rows: training fits on the first 1,500 and calibrates on the last 500 (a quarter)
    rng = np.random.default_rng(5)
    n, split = 2000, 1500
    idle = np.zeros(n)
    idle[1700:1750] = 1.0  # constant in training, moves in validation (10 % of its readings)
    drift = rng.normal(0.0, 1.0, n)
    drift[1800:] += 20.0  # leaves the training range for the last 200 rows (40 %)
    few = rng.normal(0.0, 1.0, n)
    few[1600:1610] = 50.0  # 2 % outside: under the warning's share
    path = tmp_path / "shift.csv"
    path.write_text("timestamp,steady,idle,drift,few\n" + "".join(
        f"{_iso(START + i)},{a:.5f},{b:g},{c:.5f},{d:.5f}\n"
        for i, (a, b, c, d) in enumerate(zip(rng.normal(0, 1, n), idle, drift, few))))
    report = inspect(path)
    f = only(report, "unseen", "idle")
    assert f.severity == "warning" and f.lines == (1700 + 2, 1749 + 2)
    assert f.message.startswith(f"10% of its validation readings (lines {split + 2}-{n + 1}, the last 25% of the file")
    assert "range (constant at 0), the farthest 1 on line 1702" in f.message
    f = only(report, "unseen", "drift")
    assert f.lines[0] == 1800 + 2 and f.message.startswith("40% of its validation readings")
    assert {f.column for f in report.findings if f.check == "unseen"} == {"idle", "drift"}
    # a file too short to split has no validation part: nothing to compare
    short = tmp_path / "short.csv"
    short.write_text("timestamp,idle\n" + "".join(f"{_iso(START + i)},{int(i >= 90)}\n" for i in range(100)))
    assert not [f for f in inspect(short).findings if f.check == "unseen"]


def test_step_counts_for_times_and_held_sensors_are_notes(tmp_path):
    # TEP-like: integer steps, an analyser that holds each reading for 5 steps
    rng = np.random.default_rng(1)
    n = 2500
    held = np.repeat(rng.normal(0, 1, n // 5), 5)
    path = tmp_path / "steps.csv"
    path.write_text("t,x,analyser\n" + "".join(f"{i},{a:.5f},{b:.5f}\n" for i, (a, b) in
                                             enumerate(zip(rng.normal(0, 1, n), held))))
    report = inspect(path)
    assert {f.check for f in report.findings} == {"step_times", "held"}
    assert all(f.severity == "note" for f in report.findings)
    assert "repeats the reading before in 80% of steps, in runs of up to 5" in only(report, "held", "analyser").message


def test_the_text_shows_a_few_findings_of_each_kind_and_sums_up_the_rest(tmp_path):
    """Many held analysers in two files: three notes in full, one line for the other nine with
    their files and columns; the warnings come first; the totals still count every finding."""
    rng = np.random.default_rng(2)
    n = 900  # two files of 841 windows: too few, a warning found after the notes
    analysers = [f"a{j}" for j in range(6)]
    paths = []
    for name in ("one", "two"):
        columns = [rng.normal(0, 1, n)] + [np.repeat(rng.normal(0, 1, n // 5), 5) for _ in analysers]
        path = tmp_path / f"{name}.csv"
        path.write_text("t,x," + ",".join(analysers) + "\n" + "".join(
            f"{i}," + ",".join(f"{c[i]:.5f}" for c in columns) + "\n" for i in range(n)))
        paths.append(path)
    report = inspect(*paths)
    held = [f for f in report.findings if f.check == "held"]
    assert len(held) == 12
    text = format_text(report)
    shown = [line for line in text.splitlines() if "repeats the reading before" in line]
    assert shown == [f.describe() for f in held[:3]]
    assert "note: 9 more like the 'held' notes above in 2 files, 6 columns (a3, a4, a5, a0, a1, a2): " \
           "--json or --html lists them" in text
    lines = text.splitlines()
    severities = [line.split(":")[0] for line in lines if line.startswith(("warning:", "note:"))]
    assert severities[0] == "warning" and report.findings[-1].check == "windows" and "note" in severities
    assert severities == sorted(severities, key=lambda s: s != "warning")
    assert text.endswith(f"{len(report.warnings)} warning{'s' if len(report.warnings) != 1 else ''}, "
                         f"{len(report.notes)} notes\n")


def test_missing_sensors_and_short_files(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("timestamp,a,b\n" + "".join(f"{_iso(START + i)},{i % 7},\n" for i in range(30)))
    report = inspect(path)
    assert only(report, "missing", "b").message.startswith("no readings at all (30 empty cells)")
    assert only(report, "short_file").message.startswith("30 rows: shorter than one window")
    assert report.windows == 0 and json.dumps(report.to_dict(), allow_nan=False)


def test_many_files_are_inspected_each_on_its_own(problems, clean_csv):
    report = inspect(problems[0], clean_csv)
    assert [f.path for f in report.files] == [str(problems[0]), str(clean_csv)]
    assert report.windows == report.files[0].windows + 2941 and report.enough_windows
    assert not [f for f in report.findings if f.path == str(clean_csv)]
    assert not [f for f in report.findings if f.check == "windows"]


@pytest.mark.slow
def test_it_is_fast(tmp_path):
    # a small fraction of the time it takes to read the file (a 1,000,000-row file: README)
    n = 200_000
    rng = np.random.default_rng(0)
    path = tmp_path / "big.csv"
    body = np.column_stack([START + np.arange(n), rng.normal(0, 1, (n, 6)).round(4)])
    np.savetxt(path, body, fmt=["%.0f"] + ["%.4f"] * 6, delimiter=",", header="t,a,b,c,d,e,f", comments="")
    t0 = time.perf_counter()
    table = read_csv(path)
    read = time.perf_counter() - t0
    t0 = time.perf_counter()
    inspect_tables([table], window=WINDOW, validation_fraction=0.25, init_quantile=0.98)
    assert time.perf_counter() - t0 < 0.5 * read


# ----------------------------------------------------------------------------- CLI


def test_cli_prints_the_report(problems, capsys):
    assert main(["inspect", "--data", str(problems[0])]) == 0
    out, err = capsys.readouterr()
    assert "plant.csv: 1,500 rows, 7 sensors" in out and "sampling interval 1 s" in out
    assert re.search(rf"warning: .*plant.csv, column 'stuck', lines {line_of(STUCK[0])}-{line_of(STUCK[1])}: "
                     r"flat-lined: 2.5 repeated 150 times", out)
    assert out.rstrip().endswith("10 warnings, 2 notes")
    assert "skipped 5 rows" in err  # the reading's own warning


def test_cli_window_changes_the_verdict(problems, capsys):
    assert main(["inspect", "--data", str(problems[0]), "--window", "8"]) == 0
    out = capsys.readouterr().out
    assert "windows of 8 readings without a labelled row: 1,436 (too few" in out


def test_cli_writes_json_and_html(problems, tmp_path, capsys):
    out_json, out_html = tmp_path / "q.json", tmp_path / "q.html"
    assert main(["inspect", "--data", str(problems[0]), "--json", str(out_json), "--html", str(out_html)]) == 0
    report = json.loads(out_json.read_text())
    assert (report["warnings"], report["notes"], report["windows_needed"]) == (10, 2, 2000)
    assert [s["name"] for s in report["files"][0]["sensors"]] == list(SENSORS)
    assert {f["check"] for f in report["findings"]} >= {"flatline", "outliers", "counter", "gaps", "jitter"}
    page = out_html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert page.count('src="data:image/png;base64,') == len(SENSORS)
    assert "Findings: 10 warnings, 2 notes" in page and "flat-lined: 2.5 repeated 150 times" in page


def test_cli_refuses_an_html_name_that_is_not_html(problems, tmp_path, capsys):
    assert main(["inspect", "--data", str(problems[0]), "--html", str(tmp_path / "q.png")]) == 2
    assert "--html writes a page; name it *.html" in capsys.readouterr().err


TINY = """
[model]
window = 8
hidden = [16]
latent = 4
[training]
epochs = 2
batch_size = 32
max_steps_per_epoch = 5
patience = 2
"""


@pytest.mark.slow
def test_train_prints_the_warnings_and_keeps_the_summary(problems, tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "model"
    assert main(["train", "--data", str(problems[0]), "--out", str(out), "--config", str(config), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "vigil train: warning: " in err and "column 'constant'" in err and "column 'hours'" in err
    assert f"column 'stuck', lines {line_of(STUCK[0])}-{line_of(STUCK[1])}" in err
    assert err.count("skipped 5 rows") == 1 and "step back in time" not in err  # said once, by the reading
    summary = json.loads((out / "training_report.json").read_text())["summary"]["data_quality"]
    assert summary["window"] == 8 and summary["warnings"] == 10 and summary["notes"] == 2
    assert {f["check"] for f in summary["findings"]} >= {"constant", "flatline", "counter", "windows"}
    assert "data_quality" not in json.loads((out / "config.json").read_text())["training"]
