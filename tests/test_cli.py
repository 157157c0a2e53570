import csv
import json
import re
import subprocess
import sys

import pytest

from vigil.cli import main

TINY = """
[model]
window = 8
hidden = [16]
latent = 4
[training]
epochs = 6
batch_size = 32
max_steps_per_epoch = 20
patience = 3
"""


@pytest.fixture
def tiny_toml(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture
def trained(tmp_path, normal_csv, tiny_toml):
    out = tmp_path / "model"
    assert main(["train", "--data", str(normal_csv), "--out", str(out), "--config", str(tiny_toml), "--quiet"]) == 0
    return out


@pytest.mark.parametrize("command", ["train", "score", "evaluate", "demo", "serve", "models", "retrain", "simulate", "replay", "report",
                                     "inspect"])
def test_help_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and f"\n  vigil {command} " in out


@pytest.mark.slow
def test_train_writes_artifact_and_report(trained, capsys):
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "params.msgpack", "SHA256SUMS", "training_report.json", "training_report.png"} <= names
    report = json.loads((trained / "training_report.json").read_text())
    assert report["summary"]["epochs_run"] >= 1 and report["history"][0]["seconds"] > 0
    assert (trained / "training_report.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_train_progress_and_quiet(tmp_path, normal_csv, tiny_toml, capsys):
    assert main(["train", "--data", str(normal_csv), "--out", str(tmp_path / "m"), "--config", str(tiny_toml)]) == 0
    err = capsys.readouterr().err
    assert "epoch   1/6" in err and "val" in err and "threshold" in err


@pytest.mark.slow  # trains a model or runs `vigil` through the CLI
def test_train_says_how_the_threshold_was_chosen_and_warns_of_row_number_times(tmp_path, normal_csv, tiny_toml,
                                                                             capsys):
    assert main(["train", "--data", str(normal_csv), "--out", str(tmp_path / "m"), "--config", str(tiny_toml)]) == 0
    err = capsys.readouterr().err
    assert re.search(r"\(pot: risk 1.2e-05 per window, 1 a day at 1 s, [\d.]+ x the largest of [\d,]+ validation "
                     r"scores\)", err) and "row numbers" not in err
    with normal_csv.open(newline="") as f:
        rows = list(csv.reader(f))
    numbered = tmp_path / "numbered.csv"
    with numbered.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [[str(i)] + r[1:] for i, r in enumerate(rows[1:])])
    assert main(["train", "--data", str(numbered), "--out", str(tmp_path / "n"), "--config", str(tiny_toml)]) == 0
    assert "timestamps look like row numbers" in capsys.readouterr().err


@pytest.mark.slow
def test_train_reports_the_sampling_interval(tmp_path, normal_csv, tiny_toml, capsys):
    assert main(["train", "--data", str(normal_csv), "--out", str(tmp_path / "m"), "--config", str(tiny_toml)]) == 0
    assert "sampling interval 1 s (median of 1,199 spacings)" in capsys.readouterr().err
    assert json.loads((tmp_path / "m" / "config.json").read_text())["interval_seconds"] == 1.0


@pytest.mark.slow
def test_a_given_interval_that_the_data_contradicts_is_a_warning(tmp_path, normal_csv, tiny_toml, capsys):
    assert main(["train", "--data", str(normal_csv), "--out", str(tmp_path / "m"), "--config", str(tiny_toml),
                 "--interval", "2s"]) == 0
    err = capsys.readouterr().err
    assert "sampling interval 2 s (given)" in err
    assert "warning: the data's readings are 1 s apart, not the 2 s given" in err
    assert json.loads((tmp_path / "m" / "config.json").read_text())["interval_seconds"] == 2.0


def test_an_interval_that_leaves_too_few_windows_is_refused_clearly(tmp_path, normal_csv, tiny_toml, capsys):
    # 1,200 readings 1 s apart averaged into 20 one-minute intervals: not enough to calibrate on
    assert main(["train", "--data", str(normal_csv), "--out", str(tmp_path / "m"), "--config", str(tiny_toml),
                 "--interval", "1m"]) == 2
    err = capsys.readouterr().err
    assert "intervals of 1 min" in err and "Traceback" not in err


@pytest.mark.parametrize("bad", ["soon", "0", "0s"])
def test_bad_interval_is_named(tmp_path, normal_csv, bad, capsys):
    assert main(["train", "--data", str(normal_csv), "--out", str(tmp_path / "m"), "--interval", bad]) == 2
    assert "--interval" in capsys.readouterr().err


@pytest.mark.slow
def test_training_is_reproducible(tmp_path, normal_csv, tiny_toml):
    for name in ("a", "b"):
        main(["train", "--data", str(normal_csv), "--out", str(tmp_path / name), "--config", str(tiny_toml),
              "--seed", "7", "--quiet"])
    assert (tmp_path / "a" / "params.msgpack").read_bytes() == (tmp_path / "b" / "params.msgpack").read_bytes()


@pytest.mark.slow
def test_the_compilation_cache_holds_code_not_data(tmp_path, tiny_toml):
    """`vigil train` and `vigil score` on other data of the same shape reuse the cached
    compiled code: nothing new is written (an entry holding the data or a model's numbers
    would be new for other data)."""
    from pathlib import Path

    from vigil import synthetic

    cache = tmp_path / "jax"
    env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "VIGIL_JAX_CACHE": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    entries = []
    for seed in (1, 2):
        data = synthetic.write_csv(tmp_path / f"normal{seed}.csv", synthetic.generate(1200, seed=seed)[0])
        model = tmp_path / f"model{seed}"
        for args in (["train", "--data", str(data), "--out", str(model), "--config", str(tiny_toml), "--quiet"],
                     ["score", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "s.csv"), "--quiet"]):
            subprocess.run([sys.executable, "-m", "vigil", *args], check=True, capture_output=True,
                           cwd=Path(__file__).resolve().parents[1], env=env)
        entries.append({p.name: p.stat().st_size for p in cache.iterdir()})
    assert any(name.startswith("jit_run_epoch") for name in entries[0])  # the training step is cached
    assert entries[1] == entries[0]


@pytest.mark.slow
def test_score_takes_a_directory_one_file_at_a_time(trained, tmp_path, monkeypatch, capsys):
    """A directory of files is scored as each file alone would be, in one scores file, with at
    most two files' tables alive at once (the one scored, the next one read); a bad file met on
    the way stops with its line named, and no scores file is left."""
    import gc
    import weakref

    import detector.datafiles
    import detector.offline
    from vigil import synthetic

    data = tmp_path / "fleet"
    data.mkdir()
    for i in range(5):
        values, labels = synthetic.generate(300, seed=10 + i, faults=(("cavitation", 150, 60),))
        synthetic.write_csv(data / f"pump-{i}.csv", values, labels)
    alive, most = weakref.WeakSet(), []
    read_file, score_chunks = detector.datafiles.read_file, detector.offline.score_chunks

    def counted_read(*a, **k):
        table = read_file(*a, **k)
        alive.add(table)
        return table

    def counted_score(model, table, *a, **k):
        gc.collect()
        most.append(len(alive))
        return score_chunks(model, table, *a, **k)

    monkeypatch.setattr(detector.datafiles, "read_file", counted_read)
    monkeypatch.setattr(detector.offline, "score_chunks", counted_score)
    out = tmp_path / "all.csv"
    capsys.readouterr()
    assert main(["score", "--model", str(trained), "--data", str(data), "--out", str(out)]) == 0
    assert len(most) == 5 and max(most) <= 2
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"scored 1,500 rows in [\d.]+s -> .*all\.csv: (no row flagged \(of 1,465 scored\)|"
                        r"[\d,]+ rows? flagged \([\d.]+% of 1,465 scored\) in [\d,]+ stretch(es)?, in \d of 5 files; "
                        r"led by .*)", said), said
    alone = []
    for i in range(5):
        one = tmp_path / f"one-{i}.csv"
        assert main(["score", "--model", str(trained), "--data", str(data / f"pump-{i}.csv"), "--out", str(one),
                     "--quiet"]) == 0
        alone += one.read_text().splitlines()[(i > 0):]
    assert out.read_text().splitlines() == alone

    lines = (data / "pump-3.csv").read_text().splitlines()
    cells = lines[200].split(",")
    lines[200] = ",".join([cells[0], "oops", *cells[2:]])
    (data / "pump-3.csv").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    out.unlink()
    assert main(["score", "--model", str(trained), "--data", str(data), "--out", str(out), "--quiet"]) == 2
    assert "pump-3.csv, line 201" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("all.csv*"))


@pytest.mark.slow
def test_score_writes_one_row_per_input_row(trained, faulty_csv, tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["score", "--model", str(trained), "--data", str(faulty_csv), "--out", str(out), "--quiet"]) == 0
    with open(faulty_csv) as f:
        inputs = list(csv.DictReader(f))
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:5] == ["timestamp", "score", "threshold", "is_anomaly", "top_sensors"]
    assert [r["timestamp"] for r in rows] == [r["timestamp"] for r in inputs]
    assert all(r["score"] == "" and r["is_anomaly"] == "0" for r in rows[:7])
    assert all(r["score"] != "" for r in rows[7:])
    top = rows[100]["top_sensors"].split("|")
    assert len(top) == 3 and all(":" in t for t in top)
    assert abs(sum(float(t.split(":")[1]) for t in top)) <= 1.01
    # the injected cavitation (rows 300-419) is found
    flagged = [i for i, r in enumerate(rows) if r["is_anomaly"] == "1"]
    assert any(300 <= i < 430 for i in flagged)


def _clock_step_csv(path, rows=8640, step_row=8150):
    """A month of 5-minute readings whose logger clock steps back 55 minutes once at step_row
    (so the 11 rows from there repeat times already written), as in a real historian export."""
    import numpy as np

    from vigil import csvformat, synthetic

    values, _ = synthetic.generate(rows, seed=3)
    seconds = 1_767_225_600 + 300.0 * np.arange(rows)
    seconds[step_row:] -= 55 * 60
    path.write_bytes(synthetic.header(False) + synthetic.csv_rows(csvformat.timestamps(seconds), values, None))
    return path


@pytest.mark.slow
def test_a_clock_step_back_is_skipped_with_one_warning(tmp_path, tiny_toml, capsys):
    trained = tmp_path / "model"  # on 5-minute history, like the file it scores
    assert main(["train", "--data", str(_clock_step_csv(tmp_path / "normal.csv", rows=1200, step_row=1200)),
                 "--out", str(trained), "--config", str(tiny_toml), "--quiet"]) == 0
    capsys.readouterr()
    data = _clock_step_csv(tmp_path / "historian.csv")
    out = tmp_path / "scores.csv"
    assert main(["score", "--model", str(trained), "--data", str(data), "--out", str(out), "--quiet"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "skipped 11 rows" in warnings[0] and "line 8152" in warnings[0] and "on line 8151" in warnings[0]
    with open(data) as f:
        inputs = list(csv.DictReader(f))
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["timestamp"] for r in rows] == [r["timestamp"] for r in inputs]  # one row per input row, in order
    skipped = rows[8150:8161]
    assert all(r["score"] == "" and r["is_anomaly"] == "0" for r in skipped)
    assert rows[8149]["score"] != "" and rows[8161]["score"] != ""


@pytest.mark.slow
def test_strict_time_refuses_a_clock_step_back(trained, tmp_path, capsys):
    data = _clock_step_csv(tmp_path / "historian.csv")
    assert main(["score", "--model", str(trained), "--data", str(data), "--out", str(tmp_path / "s.csv"),
                 "--strict-time"]) == 2
    err = capsys.readouterr().err
    assert "line 8152" in err and "time goes backwards" in err
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.slow
def test_training_skips_a_clock_step_back_too(tmp_path, tiny_toml, capsys):
    data = _clock_step_csv(tmp_path / "historian.csv", rows=1500, step_row=1000)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "m"), "--config", str(tiny_toml)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "skipped 11 rows" in err and "training on 1489 rows" in err


@pytest.mark.slow
def test_evaluate_reports_metrics(trained, faulty_csv, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(trained), "--data", str(faulty_csv), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    for key in ("precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate", "roc_auc",
                "average_precision", "point_adjusted_f1", "event_recall", "mean_detection_delay_rows",
                "false_alarm_episodes"):
        assert key in metrics
    assert metrics["events"] == 1 and metrics["roc_auc"] > 0.5
    assert "false_alarm_rate" in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_needs_labels(trained, normal_csv, capsys):
    assert main(["evaluate", "--model", str(trained), "--data", str(normal_csv)]) == 2
    assert "no label column" in capsys.readouterr().err


@pytest.mark.slow
def test_score_refuses_data_missing_a_sensor(trained, faulty_csv, tmp_path, capsys):
    text = faulty_csv.read_text().splitlines()
    cut = "\n".join(",".join(line.split(",")[:-2] + line.split(",")[-1:]) for line in text) + "\n"  # drop 'flow'
    bad = tmp_path / "noflow.csv"
    bad.write_text(cut)
    assert main(["score", "--model", str(trained), "--data", str(bad), "--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert "flow" in err and "noflow.csv" in err


@pytest.mark.slow
def test_corrupted_model_is_refused(trained, faulty_csv, tmp_path, capsys):
    (trained / "params.msgpack").write_bytes(b"garbage")
    assert main(["score", "--model", str(trained), "--data", str(faulty_csv), "--out", str(tmp_path / "s.csv")]) == 2
    assert "SHA-256 does not match" in capsys.readouterr().err


def test_bad_data_line_is_named(tmp_path, tiny_toml, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,a,b\n2026-01-01T00:00:00Z,1,2\n2026-01-01T00:00:01Z,1,oops\n")
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "m"), "--config", str(tiny_toml)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "line 3" in err and "'b'" in err


def test_bad_config_key_is_named(tmp_path, normal_csv, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[training]\nepoch = 3\n")
    assert main(["train", "--data", str(normal_csv), "--out", str(tmp_path / "m"), "--config", str(cfg)]) == 2
    assert "training.epoch: unknown key" in capsys.readouterr().err


def test_too_little_data(tmp_path, capsys):
    short = tmp_path / "short.csv"
    short.write_text("t,a\n" + "".join(f"{i},{i % 3}\n" for i in range(50)))
    assert main(["train", "--data", str(short), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert "not enough rows to train with window 60" in capsys.readouterr().err


@pytest.mark.slow
def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "vigil", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "train" in result.stdout and "score" in result.stdout


@pytest.mark.slow
def test_serve_without_a_broker_says_so(trained):
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "vigil", "serve", "--model", str(trained), "--bootstrap-servers",
                             f"127.0.0.1:{port}", "--metrics-addr", "127.0.0.1:0", "--log-level", "error"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in result.stderr


def test_serve_needs_a_model(capsys):
    assert main(["serve"]) == 2
    assert "model: required" in capsys.readouterr().err


@pytest.mark.slow
def test_offline_demo_finds_the_injected_faults(tmp_path, capsys):
    assert main(["demo", "--offline", "--workdir", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "injected faults: 3, detected: 3" in out and (tmp_path / "scores.csv").is_file()


def test_reading_data_and_the_command_line_do_not_import_jax():
    """JAX and Flax take 1.5 s to import: reading data, the settings and the command line's
    parser must not need them (vigil models, simulate, inspect start fast; vigil score reads
    its data while JAX loads)."""
    from pathlib import Path

    code = ("import sys, detector.table, detector.csvdata, detector.parquetdata, detector.datafiles, "
            "detector.settings, vigil.cli; vigil.cli.build_parser(); print('jax' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.slow  # trains a model or runs `vigil` through the CLI
def test_a_reader_that_goes_away_is_not_an_error(normal_csv):
    """vigil inspect ... | head: the pipe closes before the report is written; no traceback."""
    from pathlib import Path

    p = subprocess.Popen([sys.executable, "-m", "vigil", "inspect", "--data", str(normal_csv)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    p.stdout.close()  # the reader is gone before anything is written
    with p.stderr:
        err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0 and "Traceback" not in err, err
