import re

import numpy as np
import pytest

from detector.artifact import save
from detector.csvdata import read_csv
from detector.model import ModelConfig
from detector.offline import TableScores, score_table
from training.config import TrainConfig
from training.job import train_model
from vigil import synthetic
from vigil.cli import main
from vigil.report import ReportError, build_report, check_format, parse_time, top_contributors, write_report
from vigil.report_figure import minmax_indices

# Two sensor names that must survive HTML (escaping) and matplotlib (no math mode).
NAMES = ("<b>", r"flow $\oops$")


def _write(path, values, labels=None):
    """A synthetic CSV with vibration_x and flow renamed to NAMES."""
    synthetic.write_csv(path, values, labels)
    text = path.read_text()
    header, rest = text.split("\n", 1)
    path.write_text(header.replace("vibration_x", NAMES[0]).replace("flow", NAMES[1]) + "\n" + rest)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    normal = _write(root / "normal.csv", synthetic.generate(1200, seed=1)[0])
    faulty = _write(root / "faulty.csv", *synthetic.generate(
        900, seed=2, faults=(("cavitation", 300, 120), ("step", 650, 100))))
    config = TrainConfig(model=ModelConfig(window=8, hidden=(16,), latent=4), epochs=6, batch_size=32,
                         max_steps_per_epoch=20, patience=3)
    model, _ = train_model([read_csv(normal)], config)
    save(model, root / "model")
    return root / "model", faulty


@pytest.fixture(scope="module")
def model(files):
    from detector.artifact import load

    return load(files[0])


@pytest.fixture(scope="module")
def html_page(files, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "report.html"
    write_report(build_report(model, read_csv(files[1])), out)
    return out.read_text()


@pytest.mark.slow
def test_html_is_self_contained(html_page):
    assert "data:image/png;base64," in html_page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", html_page, re.I)
    assert "<script" not in html_page.lower()


def test_alert_table_lists_the_flagged_runs(files, model, html_page):
    table = read_csv(files[1])
    spans, start = [], None  # the flagged runs, found here without the report's own helper
    for i, flagged in enumerate(score_table(model, table).flags.tolist() + [False]):
        if flagged and start is None:
            start = i
        elif not flagged and start is not None:
            spans.append((start, i))
            start = None
    assert len(spans) >= 1
    expected = [(str(i + 1), table.time_raw[lo], table.time_raw[hi - 1]) for i, (lo, hi) in enumerate(spans)]
    rows = re.findall(r'<tr><td class="num">(\d+)</td><td>([^<]*)</td><td>([^<]*)</td>', html_page)
    assert rows == expected


def test_text_is_escaped(html_page):
    assert "&lt;b&gt;" in html_page and "<b>" not in html_page
    assert "Labelled events: 2, detected:" in html_page


@pytest.mark.slow
def test_png_output(files, model, tmp_path):
    out = tmp_path / "report.png"
    write_report(build_report(model, read_csv(files[1])), out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["report.png"]


@pytest.mark.parametrize("name", ["report.pdf", "report", "report.html.txt"])
def test_other_formats_are_refused(name):
    with pytest.raises(ReportError, match=r"\*\.html .* \*\.png"):
        check_format(name)


def test_time_range_keeps_exact_flags(files, model):
    table = read_csv(files[1])
    full = score_table(model, table)
    start, end = table.time[310], table.time[700]
    report = build_report(model, table, start, end)
    assert report.table.time_raw == table.time_raw[310:701]
    np.testing.assert_array_equal(report.scores.flags, full.flags[310:701])
    np.testing.assert_array_equal(report.scores.normalized, full.normalized[310:701])
    with pytest.raises(ReportError, match="no rows in the time range"):
        build_report(model, table, start=table.time[-1] + 1)


def test_parse_time():
    assert parse_time("2026-01-01T00:00:10Z") == parse_time("2026-01-01 00:00:10") == 1767225610.0
    assert parse_time("1767225610.5") == 1767225610.5
    with pytest.raises(ReportError, match="not an ISO 8601 time"):
        parse_time("yesterday")
    with pytest.raises(ReportError, match="not a finite time"):
        parse_time("nan")


def test_minmax_keeps_spikes_and_gaps():
    rows = 100_003
    values = np.zeros((rows, 2), np.float32)
    values[12_345, 0] = 9.0
    values[777, 1] = -5.0
    values[rows - 1, 0] = 4.0
    values[50_000:60_000, 1] = np.nan
    index = minmax_indices(values, buckets=500)
    assert index.shape[0] <= 2 * 500 and index.shape[1] == 2
    assert (np.diff(index, axis=0) >= 0).all() and index.max() < rows
    assert 12_345 in index[:, 0] and rows - 1 in index[:, 0] and 777 in index[:, 1]
    assert np.isnan(values[index[:, 1], 1]).any()  # the missing stretch stays a gap
    assert values[index[:, 0], 0].max() == 9.0 and np.nanmin(values[index[:, 1], 1]) == -5.0
    small = np.arange(10, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(minmax_indices(small, buckets=5)[:, 0], np.arange(10))


def test_many_sensors_show_the_top_contributors():
    sensors = tuple(f"s{i}" for i in range(20))
    contributions = np.ones((6, 20), np.float32)
    contributions[3:, 17] = 50.0
    contributions[:3, 19] = 80.0  # large, but only in rows that are not flagged
    flags = np.array([0, 0, 0, 1, 1, 0], bool)
    scores = TableScores(contributions.sum(1), contributions.sum(1), flags, contributions)
    shown = top_contributors(scores, sensors, limit=12)
    assert len(shown) == 12 and shown[0] == "s17" and "s19" not in shown
    assert top_contributors(scores, sensors[:5], limit=12) == sensors[:5]


@pytest.mark.slow
def test_cli_writes_html(files, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", "--model", str(files[0]), "--data", str(files[1]), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert "alert(s) in 900 rows" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_errors(files, tmp_path, capsys):
    model, data = str(files[0]), str(files[1])
    assert main(["report", "--model", model, "--data", data, "--out", str(tmp_path / "r.svg")]) == 2
    assert "unsupported report format '.svg'" in capsys.readouterr().err
    both = tmp_path / "two"
    both.mkdir()
    for name in ("a.csv", "b.csv"):
        (both / name).write_text(files[1].read_text())
    assert main(["report", "--model", model, "--data", str(both), "--out", str(tmp_path / "r.png")]) == 2
    assert "2 CSV files; a report covers one file" in capsys.readouterr().err
    assert main(["report", "--model", model, "--data", data, "--out", str(tmp_path / "r.png"),
                 "--from", "soon"]) == 2
    assert "not an ISO 8601 time" in capsys.readouterr().err
    assert not any(tmp_path.glob("r.*"))


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as info:
        main(["report", "--help"])
    assert info.value.code == 0
    assert "\n  vigil report --model " in capsys.readouterr().out
