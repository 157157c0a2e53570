"""`vigil simulate` and `vigil replay`: fault specs, the plant model, CSV output, Kafka output."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from detector.csvdata import read_csv
from detector.datafiles import read_path
from detector.messages import Decoder
from tests.kafka_util import BOOTSTRAP, ROOT, broker_reachable, unique
from vigil import csvformat, produce, simulate, synthetic
from vigil.cli import main
from vigil.specs import (ClockStep, Outage, SimulationError, SlowSensor, Stop, parse_clock_step, parse_fault,
                         parse_outage, parse_slow_sensor, parse_speed, parse_stop)

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
T0 = START.timestamp()


def fleet(assets=1, faults=(), seed=0, interval="1s", duration="10m", **situations):
    config, rows = simulate.plan(assets, interval=interval, seed=seed, faults=faults, duration=duration, **situations)
    return config, rows


def readings(config, rows, chunks=None):
    f = simulate.Fleet(config)
    parts = [f.chunk(n) for n in (chunks or [rows])]
    return np.concatenate([p.values for p in parts], axis=1), np.concatenate([p.labels for p in parts], axis=1)


class ListSink:
    def __init__(self):
        self.sent = []  # (key, value, monotonic time)

    def send(self, key, value):
        self.sent.append((key, value, time.monotonic()))

    def decoded(self, sensors=synthetic.SENSORS):
        decoder = Decoder(sensors)
        return [decoder.decode(value, key) for key, value, _ in self.sent]


# ---------------------------------------------------------------- fault specs

@pytest.mark.parametrize("text, expect", [
    ("pump-3:bearing@2h+30m", ("pump-3", "bearing", 7200, 1800, None)),
    ("pump-1:stuck/pressure@1.5d+45m", ("pump-1", "stuck", 129600, 2700, "pressure")),
    ("p:dropout/temperature@90+0.5", ("p", "dropout", 90, 0.5, "temperature")),
    ("p:STEP@0+1w", ("p", "step", 0, 7 * 86400, None)),
])
def test_fault_spec(text, expect):
    f = parse_fault(text)
    assert (f.asset, f.kind, f.start, f.duration, f.sensor) == expect and f.spec == text


@pytest.mark.parametrize("text, message", [
    ("pump-3", "expected ASSET:KIND[/SENSOR]@START+DURATION"),
    ("pump-3:bearing@2h", "expected ASSET:KIND[/SENSOR]@START+DURATION"),
    ("pump-3:bearin@2h+30m", "unknown kind 'bearin' (choose from bearing, cavitation, stuck, dropout, step)"),
    ("pump-3:bearing/flow@2h+30m", "only stuck, dropout, step take a /SENSOR"),
    ("pump-3:stuck/flo@2h+30m", "unknown sensor 'flo'"),
    ("pump-3:step@2x+30m", "START: not a duration: '2x'"),
    ("pump-3:step@2h+0", "DURATION: '0' must be more than 0"),
])
def test_fault_spec_errors_name_the_spec(text, message):
    with pytest.raises(SimulationError) as info:
        parse_fault(text)
    assert f"--fault {text!r}" in str(info.value) and message in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"faults": ["pump-9:bearing@1m+1m"]}, "no asset 'pump-9' (simulating pump-1..pump-2)"),
    ({"faults": ["pump-1:bearing@11m+1m"]}, "starts after the simulation ends (--duration 10m)"),
    ({"interval": "0s"}, "--interval: '0s' must be more than 0"),
    ({"duration": "soon"}, "--duration: not a duration: 'soon'"),
])
def test_plan_errors(kwargs, message):
    with pytest.raises(SimulationError) as info:
        fleet(assets=2, **kwargs)
    assert message in str(info.value)


def test_speed():
    assert parse_speed("1") == 1 and parse_speed("10x") == 10 and parse_speed("max") is None
    with pytest.raises(SimulationError, match="--speed 'fast'"):
        parse_speed("fast")


# ---------------------------------------------------------------- the plant model

@pytest.mark.parametrize("spec, changed", [
    ("bearing", {"vibration_x", "vibration_y", "temperature"}),
    ("cavitation", {"vibration_x", "pressure", "flow"}),
    ("stuck", {"pressure", "flow"}),
    ("stuck/temperature", {"temperature"}),
    ("dropout", {"flow"}),
    ("dropout/vibration_y", {"vibration_y"}),
    ("step", {"motor_current"}),
    ("step/voltage", {"voltage"}),
])
def test_fault_changes_its_sensors_and_labels_exactly_its_rows(spec, changed):
    clean, rows = fleet(assets=2)
    faulty, _ = fleet(assets=2, faults=[f"pump-2:{spec}@200s+100s"])
    base, base_labels = readings(clean, rows)
    values, labels = readings(faulty, rows)
    assert not base_labels.any()
    assert np.array_equal(np.flatnonzero(labels[1]), np.arange(200, 300)) and not labels[0].any()
    assert np.array_equal(values[0], base[0])  # the other pump is untouched
    differs = ~np.isclose(values[1], base[1], rtol=0, atol=1e-12)  # NaN != anything
    assert not differs[:200].any() and not differs[300:].any()
    touched = {synthetic.SENSORS[j] for j in np.flatnonzero(differs[200:300].any(axis=0))}
    assert touched == changed
    inside = values[1, 200:300]
    cols = [synthetic.SENSORS.index(s) for s in changed]
    kind = spec.split("/")[0]
    if kind == "dropout":
        assert np.isnan(inside[:, cols]).all() and np.isnan(values[1]).sum() == 100
    if kind == "stuck":
        assert (inside[:, cols] == inside[0, cols]).all()
    if kind == "bearing":  # a slow ramp from nothing
        added = inside[:, cols] - base[1, 200:300][:, cols]
        assert np.all(np.abs(added[0]) < 1e-9) and np.all(added[-10:].mean(axis=0) > 0.5)
        assert np.all(added[40:50].mean(axis=0) < 0.6 * added[-10:].mean(axis=0))


def test_same_seed_same_readings_any_chunking_and_plant_size():
    config, rows = fleet(assets=3, faults=["pump-2:bearing@100s+200s", "pump-3:stuck@50s+20s"])
    values, labels = readings(config, rows)
    again, again_labels = readings(config, rows, chunks=[1, 99, 250, 250])
    assert np.array_equal(values, again, equal_nan=True) and np.array_equal(labels, again_labels)
    bigger, _ = fleet(assets=5, faults=["pump-2:bearing@100s+200s", "pump-3:stuck@50s+20s"])
    assert np.array_equal(readings(bigger, rows)[0][:3], values)  # pump-1..3 do not depend on the plant size
    other, _ = fleet(assets=3, seed=1)
    assert not np.allclose(readings(other, rows)[0], values[0:1])
    assert not np.allclose(values[0], values[1])  # each pump is its own


def test_sensors_correlate_through_the_plant_load():
    config, rows = fleet(assets=3, interval="60s", duration="3d")
    values, _ = readings(config, rows)
    current, flow = synthetic.SENSORS.index("motor_current"), synthetic.SENSORS.index("flow")
    assert np.corrcoef(values[0, :, current], values[0, :, flow])[0, 1] > 0.9  # within a pump
    assert np.corrcoef(values[0, :, current], values[1, :, current])[0, 1] > 0.8  # across pumps: the plant load
    hour = (np.arange(rows) * 60 // 3600) % 24
    assert values[:, hour == 12, current].mean() > values[:, hour == 0, current].mean() + 1.0  # daily cycle


def test_generate_keeps_its_single_pump_data_set():
    values, labels = synthetic.generate(600, seed=2, faults=(("cavitation", 300, 120), ("dropout", 500, 10)))
    assert values.shape == (600, 7) and labels.sum() == 130
    assert np.isnan(values[500:510, synthetic.SENSORS.index("flow")]).all() and np.isnan(values).sum() == 10


# ---------------------------------------------------------------- CSV

def test_csv_cells_match_python_formatting(rng):
    values = rng.normal(0, 1, 5000) * 10.0 ** rng.integers(-4, 7, 5000)
    values[::97] = np.nan
    for decimals in (0, 3, 4):
        cells = csvformat.lines([csvformat.numbers(values, decimals)]).decode().split("\n")[:-1]
        expect = ["" if np.isnan(v) else f"{v:.{decimals}f}" for v in values]
        expect = [e[1:] if e.startswith("-") and float(e) == 0 else e for e in expect]  # no "-0.000"
        mismatches = [(c, e) for c, e in zip(cells, expect)  # a tie may round either way
                      if c != e and (not c or not e or abs(float(c) - float(e)) > 1.01 * 10**-decimals)]
        assert len(cells) == len(values) and not mismatches
    seconds = rng.uniform(-2e9, 7e9, 2000).round(3)
    for millis, fmt in ((False, "%Y-%m-%dT%H:%M:%SZ"), (True, "%Y-%m-%dT%H:%M:%S.%fZ")):
        got = csvformat.lines([csvformat.timestamps(seconds, millis)]).decode().split()
        want = [datetime.fromtimestamp(round(s, 3 if millis else 0), timezone.utc).strftime(fmt) for s in seconds]
        assert got == [w[:-4] + "Z" if millis else w for w in want]


def test_write_csvs_reads_back_with_ground_truth(tmp_path):
    config, rows = fleet(assets=2, faults=["pump-1:dropout@2m+30s", "pump-2:cavitation@5m+1m"])
    written = simulate.write_csvs(config, rows, tmp_path, chunk_rows=77)
    values, labels = readings(config, rows)
    tables = read_path(tmp_path)  # what vigil train reads
    assert [t.path for t in tables] == [str(p) for p in written.files]
    for i, t in enumerate(tables):
        assert t.sensors == synthetic.SENSORS and t.rows == rows == 600
        assert np.array_equal(t.time, T0 + np.arange(rows))
        assert np.array_equal(t.labels, labels[i])
        assert np.array_equal(np.isnan(t.values), np.isnan(values[i]))  # dropout: empty cells -> NaN
        assert np.nanmax(np.abs(t.values - values[i]) / 10.0 ** -np.array(synthetic.DECIMALS)) <= 0.51  # rounding
    assert np.isnan(tables[0].values[120:150, synthetic.SENSORS.index("flow")]).all()
    truth = json.loads((tmp_path / "faults.json").read_text())
    assert truth["rows"] == 600 and truth["assets"] == ["pump-1", "pump-2"]
    assert truth["faults"][1] == {"spec": "pump-2:cavitation@5m+1m", "asset": "pump-2", "kind": "cavitation",
                                  "sensors": ["vibration_x", "pressure", "flow"], "start": "2026-01-01T00:05:00Z",
                                  "end": "2026-01-01T00:06:00Z", "first_row": 300, "end_row": 360}
    with pytest.raises(SimulationError, match="pump-1.csv: already exists"):
        simulate.write_csvs(config, rows, tmp_path)


def test_csv_is_the_same_for_any_chunk_size(tmp_path):
    config, rows = fleet(assets=1, faults=["pump-1:bearing@1m+3m"], interval="0.5s")
    simulate.write_csvs(config, rows, tmp_path / "a", chunk_rows=1 << 16)
    simulate.write_csvs(config, rows, tmp_path / "b", chunk_rows=333)
    a = (tmp_path / "a" / "pump-1.csv").read_bytes()
    assert a == (tmp_path / "b" / "pump-1.csv").read_bytes()
    assert a.splitlines()[2].startswith(b"2026-01-01T00:00:00.500Z,")


def test_cli_simulate_writes_files_train_reads(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--assets", "3", "--duration", "20m", "--out", str(out), "--seed", "4",
                 "--fault", "pump-2:bearing@5m+10m", "--fault", "pump-3:stuck/flow@1m+2m"]) == 0
    captured = capsys.readouterr()
    assert "wrote 3 files x 1,200 rows" in captured.out
    assert "fault pump-2 bearing (vibration_x, vibration_y, temperature) from 2026-01-01T00:05:00Z" in captured.err
    tables = read_path(out)
    assert [t.rows for t in tables] == [1200] * 3 and [int(t.labels.sum()) for t in tables] == [0, 600, 120]
    assert main(["simulate", "--assets", "3", "--duration", "20m", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--assets", "2", "--duration", "1h"], "give --out DIR (CSV files) or --bootstrap-servers"),
    (["--out", "x"], "--out needs --duration"),
    (["--out", "x", "--duration", "1h", "--speed", "10"], "--rate and --speed pace Kafka output"),
    (["--out", "x", "--duration", "1h", "--fault", "pump-1:melt@1m+1m"], "unknown kind 'melt'"),
    (["--out", "x", "--duration", "1h", "--assets", "2", "--fault", "pump-3:step@1m+1m"], "no asset 'pump-3'"),
    (["--out", "x", "--duration", "1h", "--start", "yesterday"], "--start 'yesterday': not an ISO 8601 time"),
    (["--bootstrap-servers", "127.0.0.1:9092", "--rate", "0"], "--rate 0.0: readings per second"),
])
def test_cli_simulate_errors(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("command", ["simulate", "replay"])
def test_help_shows_examples(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "example" in out and f"\n  vigil {command} " in out
    if command == "simulate":
        assert all(f"\n  {kind} " in out for kind in synthetic.FAULTS) and "ASSET:KIND[/SENSOR]@START+DURATION" in out


# ---------------------------------------------------------------- situations of normal operation

COL = {name: j for j, name in enumerate(synthetic.SENSORS)}
OFF = [COL[n] for n in ("vibration_x", "vibration_y", "motor_current", "flow")]  # near zero when stopped


def rounded_equal(read, made):
    """Whether values read from a CSV [rows, 7] are the readings made [rows, 7], rounded as written."""
    return np.nanmax(np.abs(read - made) / 10.0 ** -np.array(synthetic.DECIMALS)) <= 0.51


@pytest.mark.parametrize("parse, text, expect", [
    (parse_stop, "pump-*@22:00+6h", Stop("pump-*", 79200, 21600, True, "pump-*@22:00+6h")),
    (parse_stop, "pump-2@7:30:15+90s", Stop("pump-2", 27015, 90, True, "pump-2@7:30:15+90s")),
    (parse_stop, "pump-[13]@2h+30m", Stop("pump-[13]", 7200, 1800, False, "pump-[13]@2h+30m")),
    (parse_outage, "pump-2@30h+2h", Outage("pump-2", 108000, 7200, "pump-2@30h+2h")),
    (parse_clock_step, "pump-1@5h-55m", ClockStep("pump-1", 18000, 3300, "pump-1@5h-55m")),
    (parse_slow_sensor, "temperature/10", SlowSensor("temperature", 10, "temperature/10")),
])
def test_situation_specs(parse, text, expect):
    assert parse(text) == expect


@pytest.mark.parametrize("parse, text, message", [
    (parse_stop, "pump-1", "--stop 'pump-1': expected ASSETS@HH:MM+DURATION (daily, UTC) or ASSETS@START+DURATION"),
    (parse_stop, "pump-1@25:00+1h", "--stop 'pump-1@25:00+1h': not a time of day: '25:00'"),
    (parse_stop, "pump-1@22:00+1d", "--stop 'pump-1@22:00+1d': DURATION '1d' must be shorter than a day"),
    (parse_stop, "pump-1@22:00+x", "--stop 'pump-1@22:00+x': DURATION: not a duration: 'x'"),
    (parse_stop, "pump-1@soon+1h", "--stop 'pump-1@soon+1h': START: not a duration: 'soon'"),
    (parse_outage, "pump-1@2h", "--outage 'pump-1@2h': expected ASSETS@START+DURATION"),
    (parse_outage, "pump-1@2h+0", "--outage 'pump-1@2h+0': DURATION: '0' must be more than 0"),
    (parse_clock_step, "pump-1@5h+55m", "--clock-step 'pump-1@5h+55m': expected ASSETS@START-STEP"),
    (parse_clock_step, "pump-1@5h-1y", "--clock-step 'pump-1@5h-1y': STEP: not a duration: '1y'"),
    (parse_slow_sensor, "temperature", "--slow-sensor 'temperature': expected SENSOR/FACTOR"),
    (parse_slow_sensor, "temp/10", "--slow-sensor 'temp/10': unknown sensor 'temp'"),
    (parse_slow_sensor, "flow/1", "--slow-sensor 'flow/1': FACTOR '1' must be a whole number of at least 2"),
    (parse_slow_sensor, "flow/2.5", "--slow-sensor 'flow/2.5': FACTOR '2.5'"),
])
def test_situation_spec_errors_name_the_option_and_part(parse, text, message):
    with pytest.raises(SimulationError) as info:
        parse(text)
    assert message in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"stops": ["pmp-*@22:00+1h"]}, "--stop 'pmp-*@22:00+1h': no asset matches 'pmp-*' (simulating pump-1..pump-2)"),
    ({"outages": ["pump-3@1m+1m"]}, "--outage 'pump-3@1m+1m': no asset matches 'pump-3'"),
    ({"clock_steps": ["pump-1@11m-1m"]}, "--clock-step 'pump-1@11m-1m': starts after the simulation ends"),
    ({"stops": ["pump-1@11m+1m"]}, "--stop 'pump-1@11m+1m': starts after the simulation ends"),
    ({"outages": ["pump-1@1m+1m", "pump-*@0+5m", "pump-1@4m+1h"]},
     "--outage 'pump-1@1m+1m', 'pump-*@0+5m', 'pump-1@4m+1h': together leave pump-1 without a single reading"),
    ({"outages": ["pump-2@0+1h"]}, "--outage 'pump-2@0+1h': leaves pump-2 without a single reading"),
    ({"jitter": "0.5"}, "--jitter 0.5: must be less than half the --interval (1s) less a millisecond, at most 0.4995s"),
    ({"jitter": "fast"}, "--jitter: not a duration: 'fast'"),
    ({"slow_sensors": ["flow/2", "flow/3"]}, "--slow-sensor 'flow/2': flow is given more than once"),
])
def test_plan_situation_errors(kwargs, message):
    with pytest.raises(SimulationError) as info:
        fleet(assets=2, **kwargs)
    assert message in str(info.value)


def test_daily_stop_reads_near_zero_with_ramps_and_label_0(tmp_path):
    clean, rows = fleet(assets=2, duration="30m")
    config, _ = fleet(assets=2, duration="30m", stops=["pump-1@00:10+10m", "pump-2@23:55+6m"],
                      faults=["pump-1:bearing@12m+5m"])
    simulate.write_csvs(config, rows, tmp_path)
    base, _ = readings(clean, rows)
    t1, t2 = (read_csv(tmp_path / f"pump-{i}.csv") for i in (1, 2))
    values, labels = t1.values, t1.labels
    assert t1.rows == t2.rows == rows and np.array_equal(t1.time, T0 + np.arange(rows))  # stopped is not missing
    assert not np.isnan(values).any() and not np.isnan(t2.values).any()
    stopped = slice(630, 1170)  # 00:10:30 .. 00:19:30, between the 30 s ramps
    assert np.all(values[stopped][:, OFF] < 0.2) and np.all(values[stopped][:, OFF] >= 0)
    assert np.all(np.abs(values[stopped, COL["pressure"]] - 0.35) < 0.1)  # the standing column
    assert rounded_equal(values[:600], base[0, :600])  # the same pump up to the stop
    assert np.abs(values[:, COL["voltage"]] - base[0, :, COL["voltage"]]).max() <= 0.0051  # the supply stays
    current = values[:, COL["motor_current"]]
    assert 1.0 < current[615] < current[605] - 1.0 and current[1185] > current[1175] + 1.0  # ramps down and up
    temperature = values[:, COL["temperature"]]
    assert temperature[1199] < temperature[599] - 10  # cooling while stopped
    assert np.array_equal(np.flatnonzero(labels), np.arange(720, 1020))  # only the fault is labelled
    vib = values[720:1020, COL["vibration_x"]] - base[0, 720:1020, COL["vibration_x"]]
    assert np.all(values[720:1020, COL["vibration_x"]] < 0.2) and vib.max() < 0  # the wear fades with the pump
    # pump-2: stopped every day from 23:55 for 6 min: the first minute of the file, then from 23:55
    assert np.all(t2.values[:30][:, OFF] < 0.2) and np.all(t2.values[90:][:, OFF] > 0.2) and not t2.labels.any()
    truth = json.loads((tmp_path / "faults.json").read_text())
    assert truth["stops"] == [
        {"spec": "pump-1@00:10+10m", "asset": "pump-1", "start": "2026-01-01T00:10:00Z",
         "end": "2026-01-01T00:20:00Z", "first_row": 600, "end_row": 1200},
        {"spec": "pump-2@23:55+6m", "asset": "pump-2", "start": "2026-01-01T00:00:00Z",
         "end": "2026-01-01T00:01:00Z", "first_row": 0, "end_row": 60}]
    assert [f["first_row"] for f in truth["faults"]] == [720]


def test_a_stop_once_and_a_daily_stop_over_days():
    config, rows = fleet(assets=3, interval="60s", duration="3d", stops=["pump-[12]@22:00+6h", "pump-3@1d+1h"])
    values, labels = readings(config, rows)
    minute = np.arange(rows) % 1440
    night = (minute > 22 * 60) | (minute < 4 * 60)  # a 30 s ramp is within one 60 s reading
    assert np.all(values[:2, night][..., OFF] < 0.2) and np.all(values[:2, ~night][..., COL["motor_current"]] > 2)
    once = (np.arange(rows) > 1440) & (np.arange(rows) < 1500)
    assert np.all(values[2, once][:, OFF] < 0.2) and np.all(values[2, ~once][:, COL["motor_current"]] > 2)
    assert not labels.any()


def test_outage_leaves_a_gap_and_rows_count_in_the_file(tmp_path):
    config, rows = fleet(assets=2, outages=["pump-2@2m+1m"], faults=["pump-2:step@5m+1m"])
    written = simulate.write_csvs(config, rows, tmp_path)
    assert "less 60 in outages" in written.describe()
    t1, t2 = read_csv(tmp_path / "pump-1.csv"), read_csv(tmp_path / "pump-2.csv")
    assert t1.rows == 600 and t2.rows == 540
    seconds = t2.time - T0
    assert not np.any((seconds >= 120) & (seconds < 180)) and np.diff(seconds).max() == 61
    values, labels = readings(config, rows)
    keep = np.r_[0:120, 180:600]
    assert rounded_equal(t2.values, values[1, keep]) and np.array_equal(t2.labels, labels[1, keep])
    truth = json.loads((tmp_path / "faults.json").read_text())
    assert truth["outages"] == [{"spec": "pump-2@2m+1m", "asset": "pump-2", "start": "2026-01-01T00:02:00Z",
                                 "end": "2026-01-01T00:03:00Z", "readings": 60, "file_row": 120}]
    assert truth["file_rows"] == {"pump-1": 600, "pump-2": 540}
    fault = truth["faults"][0]
    assert (fault["first_row"], fault["end_row"]) == (240, 300)  # rows of the file, after the gap
    assert np.array_equal(np.flatnonzero(t2.labels), np.arange(240, 300))


@pytest.mark.parametrize("jitter", ["0.3", "0.4995"])
def test_jittered_times_vary_but_stay_in_order(tmp_path, jitter):
    clean, rows = fleet(assets=2)
    config, _ = fleet(assets=2, jitter=jitter)
    simulate.write_csvs(config, rows, tmp_path)
    values, _ = readings(clean, rows)
    for i in range(2):
        table = read_csv(tmp_path / f"pump-{i + 1}.csv", strict_time=True)
        offsets = table.time - (T0 + np.arange(rows))
        spacing = np.diff(table.time)
        assert table.rows == rows and spacing.min() > 0 and spacing.std() > 0.1
        assert np.abs(offsets).max() <= float(jitter) + 5e-4 and np.abs(offsets).max() > 0.8 * float(jitter)
        assert rounded_equal(table.values, values[i])  # only the times move
    assert json.loads((tmp_path / "faults.json").read_text())["jitter_seconds"] == float(jitter)


def test_clock_step_repeats_times_in_the_file(tmp_path):
    config, rows = fleet(assets=2, clock_steps=["pump-1@5m-2m"])
    simulate.write_csvs(config, rows, tmp_path)
    lines = (tmp_path / "pump-1.csv").read_text().splitlines()[1:]
    stamps = [line.split(",")[0] for line in lines]
    assert len(stamps) == rows and stamps[299:301] == ["2026-01-01T00:04:59Z", "2026-01-01T00:03:00Z"]
    assert stamps[180:300] == stamps[300:420] and stamps[-1] == "2026-01-01T00:07:59Z"
    assert len(set(stamps)) == rows - 120 and all(line.endswith(",0") for line in lines)
    table = read_csv(tmp_path / "pump-1.csv")  # the daemon's rule: the repeated stretch is skipped
    assert table.skipped.count == 120 and table.skipped.line == 302
    with pytest.raises(Exception, match="time goes backwards"):
        read_csv(tmp_path / "pump-1.csv", strict_time=True)
    assert read_csv(tmp_path / "pump-2.csv", strict_time=True).rows == rows  # the other clock is right
    truth = json.loads((tmp_path / "faults.json").read_text())
    assert truth["clock_steps"] == [{"spec": "pump-1@5m-2m", "asset": "pump-1", "at": "2026-01-01T00:05:00Z",
                                     "back_seconds": 120.0, "first_row": 300}]


def test_slow_sensor_reports_every_factor_th_reading(tmp_path):
    config, rows = fleet(assets=2, slow_sensors=["temperature/10", "pressure/3"], faults=["pump-1:dropout@1m+1m"])
    simulate.write_csvs(config, rows, tmp_path)
    for i in (1, 2):
        table = read_csv(tmp_path / f"pump-{i}.csv")
        missing = np.isnan(table.values)
        row = np.arange(rows)
        assert np.array_equal(missing[:, COL["temperature"]], row % 10 != 0)
        assert np.array_equal(missing[:, COL["pressure"]], row % 3 != 0)
        others = [j for j in range(7) if j not in (COL["temperature"], COL["pressure"], COL["flow"])]
        assert not missing[:, others].any()
        assert np.array_equal(np.flatnonzero(table.labels), np.arange(60, 120) if i == 1 else [])  # the fault only
    cells = (tmp_path / "pump-2.csv").read_text().splitlines()[1:4]
    assert [c.split(",")[COL["temperature"] + 1] for c in cells][1:] == ["", ""]
    assert json.loads((tmp_path / "faults.json").read_text())["slow_sensors"] == {"temperature": 10, "pressure": 3}


ALL = {"stops": ["pump-*@00:02+3m"], "outages": ["pump-2@7m+1m"], "jitter": "0.25",
       "clock_steps": ["pump-3@6m-90s"], "slow_sensors": ["flow/4"]}


def test_situations_are_deterministic_for_any_chunking(tmp_path):
    config, rows = fleet(assets=3, faults=["pump-1:cavitation@3m+2m"], **ALL)
    simulate.write_csvs(config, rows, tmp_path / "a")
    simulate.write_csvs(config, rows, tmp_path / "b", chunk_rows=77)
    other, _ = fleet(assets=3, seed=1, faults=["pump-1:cavitation@3m+2m"], **ALL)
    simulate.write_csvs(other, rows, tmp_path / "c")
    for name in ("pump-1.csv", "pump-2.csv", "pump-3.csv", "faults.json"):
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes() and a != (tmp_path / "c" / name).read_bytes()
    times = [read_csv(tmp_path / d / "pump-1.csv").time for d in ("a", "c")]
    assert not np.array_equal(*times)  # another seed, other jitter
    bigger, _ = fleet(assets=4, faults=["pump-1:cavitation@3m+2m"], **ALL)
    simulate.write_csvs(bigger, rows, tmp_path / "d")
    assert (tmp_path / "d" / "pump-2.csv").read_bytes() == (tmp_path / "a" / "pump-2.csv").read_bytes()


def test_situations_leave_other_pumps_as_they_were():
    clean, rows = fleet(assets=2, faults=["pump-2:bearing@1m+2m"])
    config, _ = fleet(assets=2, faults=["pump-2:bearing@1m+2m"], stops=["pump-1@00:02+3m"],
                      outages=["pump-1@7m+1m"], clock_steps=["pump-1@6m-90s"])
    chunk, base = simulate.Fleet(config).chunk(rows), simulate.Fleet(clean).chunk(rows)
    assert np.array_equal(chunk.asset(1)[1], base.values[1]) and np.array_equal(chunk.asset(1)[0], base.seconds)
    assert np.array_equal(chunk.labels, base.labels)  # situations are never labelled


@pytest.mark.parametrize("speed", [None, 1e9])
def test_live_readings_with_situations_equal_the_csv(tmp_path, speed):
    config, rows = fleet(assets=3, duration="1500s", **ALL)
    simulate.write_csvs(config, rows, tmp_path)
    sink = ListSink()
    done = produce.produce_fleet(simulate.Fleet(config), rows, sink, speed, threading.Event())
    assert done.readings == 3 * 1500 - 60  # pump-2's outage sends nothing
    messages = sink.decoded()  # every message in time order (batches are cut at the clock step)
    for asset in ("pump-1", "pump-2", "pump-3"):
        got = [m for m in messages if m.asset == asset]
        table = read_csv(tmp_path / f"{asset}.csv")
        times = np.concatenate([m.times for m in got])
        # vigil serve refuses a message whose first reading is not after the asset's last one:
        # it takes exactly the rows read_csv keeps
        taken, last = [], -1
        for m in got:
            if m.times[0] > last:
                taken.append(m)
                last = m.times[-1]
        assert np.array_equal(np.concatenate([m.times for m in taken]), np.rint(table.time * 1000).astype(np.int64))
        assert np.array_equal(np.concatenate([m.values for m in taken]), table.values, equal_nan=True)  # nulls
        assert len(times) == table.rows + (0 if table.skipped is None else table.skipped.count)
    pump3 = np.concatenate([m.times for m in messages if m.asset == "pump-3"])
    assert (np.diff(pump3) < 0).sum() == 1  # the clock step, sent as it is


def test_cli_simulate_situations(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--assets", "2", "--duration", "20m", "--out", str(out), "--stop", "pump-*@00:05+5m",
                 "--outage", "pump-2@12m+2m", "--jitter", "0.2", "--clock-step", "pump-1@15m-55.5s",
                 "--slow-sensor", "temperature/5"]) == 0
    captured = capsys.readouterr()
    assert "wrote 2 files x 1,200 rows less 120 in outages" in captured.out
    for line in ("stop pump-1, pump-2 every day at 00:05:00 UTC for 5m (ramps of 30s; labelled normal)",
                 "outage pump-2 from 2026-01-01T00:12:00Z for 2m: no readings",
                 "clock of pump-1 steps back 55.5s at 2026-01-01T00:15:00Z",
                 "jitter: reading times within +-0.2s of every 1s",
                 "slow sensor temperature: one reading in 5 (every 5s)"):
        assert f"simulate: {line}" in captured.err
    truth = json.loads((out / "faults.json").read_text())
    assert [len(truth[k]) for k in ("stops", "outages", "clock_steps")] == [2, 1, 1]
    assert [t.rows for t in read_path(out)] == [1200 - 55, 1080]  # pump-1: the repeated stretch skipped


@pytest.mark.parametrize("argv, message", [
    (["--stop", "pump-1@22:00"], "--stop 'pump-1@22:00': expected ASSETS@HH:MM+DURATION"),
    (["--outage", "pump-9@1m+1m"], "--outage 'pump-9@1m+1m': no asset matches 'pump-9'"),
    (["--jitter", "1"], "--jitter 1: must be less than half the --interval (1s)"),
    (["--clock-step", "pump-1@1m-"], "--clock-step 'pump-1@1m-': expected ASSETS@START-STEP"),
    (["--slow-sensor", "flow/0"], "--slow-sensor 'flow/0': FACTOR '0' must be a whole number of at least 2"),
])
def test_cli_simulate_situation_errors(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--out", "x", "--duration", "1h", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- producing (in memory)

def test_live_readings_equal_the_csv(tmp_path):
    config, rows = fleet(assets=2, faults=["pump-2:dropout/pressure@10s+5s"], duration="1500s")
    simulate.write_csvs(config, rows, tmp_path)
    sink = ListSink()
    done = produce.produce_fleet(simulate.Fleet(config), rows, sink, None, threading.Event())
    assert (done.readings, done.messages) == (3000, 4)  # batches of at most STEP_ROWS readings
    assert (done.first, done.last) == ("2026-01-01T00:00:00Z", "2026-01-01T00:24:59Z")
    messages = sink.decoded()
    for asset in ("pump-1", "pump-2"):
        got = [m for m in messages if m.asset == asset]
        table = read_csv(tmp_path / f"{asset}.csv")
        assert np.array_equal(np.concatenate([m.times for m in got]), np.rint(table.time * 1000).astype(np.int64))
        assert np.array_equal(np.concatenate([m.values for m in got]), table.values, equal_nan=True)


def test_paced_live_readings_one_per_message():
    config, _ = fleet(assets=3)
    sink, stop = ListSink(), threading.Event()
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    done = produce.produce_fleet(simulate.Fleet(config), None, sink, 20.0, stop)  # until stopped
    assert time.monotonic() - t0 < 2
    assert 3 * 4 <= done.readings == done.messages == len(sink.sent) <= 3 * 16 and done.readings % 3 == 0
    times = [m.times[0] for m in sink.decoded() if m.asset == "pump-3"]
    assert times == [T0 * 1000 + 1000 * i for i in range(len(times))]


def test_replay_paced_keeps_times_and_missing_cells(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("time,a,b,anomaly\n"
                    "2026-01-01T00:00:00Z,1.5,,0\n"
                    "2026-01-01T00:00:01Z,0.8123,2,0\n"
                    "2026-01-01T00:00:01.5Z,,3e-7,1\n"
                    "2026-01-01T00:00:03Z,-4,5,1\n")
    table = read_csv(path)
    sink = ListSink()
    t0 = time.monotonic()
    done = produce.replay(table, "pump-9", sink, 10.0, threading.Event())
    assert done.readings == done.messages == 4
    sent_at = [t - t0 for _, _, t in sink.sent]
    assert sent_at[-1] == pytest.approx(0.3, abs=0.25) and sent_at == sorted(sent_at)  # 3 s of data at 10x
    assert sent_at[2] - sent_at[1] == pytest.approx(0.05, abs=0.04)
    messages = sink.decoded(("a", "b"))
    assert {k for k, _, _ in sink.sent} == {b"pump-9"}
    assert [m.times[0] for m in messages] == list(np.rint(table.time * 1000).astype(np.int64))
    assert json.loads(sink.sent[0][1])["values"] == {"a": 1.5, "b": None}
    assert json.loads(sink.sent[1][1]) == {"asset": "pump-9", "ts": "2026-01-01T00:00:01.000Z",
                                           "values": {"a": 0.8123, "b": 2.0}}
    assert json.loads(sink.sent[2][1])["values"] == {"a": None, "b": 3e-7}


def test_replay_max_batches_and_rebase(tmp_path):
    config, rows = fleet(assets=1, duration="2500s")
    simulate.write_csvs(config, rows, tmp_path)
    table = read_csv(tmp_path / "pump-1.csv")
    sink = ListSink()
    done = produce.replay(table, "pump-1", sink, None, threading.Event(), shift=86400.0)
    assert done.readings == 2500 and done.messages == 3 and done.first == "2026-01-02T00:00:00Z"
    messages = sink.decoded()
    assert np.array_equal(np.concatenate([m.times for m in messages]), (T0 + 86400 + np.arange(2500)) * 1000)
    assert np.array_equal(np.concatenate([m.values for m in messages]), table.values, equal_nan=True)


def test_a_stopped_run_sends_nothing_more(tmp_path):
    config, _ = fleet(assets=2)
    stop = threading.Event()
    stop.set()
    sink = ListSink()
    assert produce.produce_fleet(simulate.Fleet(config), None, sink, 1.0, stop).readings == 0 and not sink.sent


def test_shortest_round_trips_float32(rng):
    x = (rng.normal(0, 1, (1000, 3)) * 10.0 ** rng.integers(-30, 30, (1000, 3))).astype(np.float32)
    x[0, 0], x[1, 1] = np.nan, 0
    short = produce.shortest(x)
    assert short.shape == x.shape and np.array_equal(short.astype(np.float32), x, equal_nan=True)
    assert produce.shortest(np.array([0.8123, 230.74], np.float32)).tolist() == [0.8123, 230.74]


def test_clock_notes():
    now = time.time()
    assert produce.clock_notes(now, None, 1.0, now) == []
    assert produce.clock_notes(now - 86400 * 7, 86400 * 7, None, now) == []
    assert "after about 29 min" in produce.clock_notes(now, None, 50.0, now)[0]
    assert produce.clock_notes(now, 3600, 50.0, now) == []
    assert "before 2000" in produce.clock_notes(0.0, 10, 1.0, now)[0]
    assert "more than a day ahead of the clock," in produce.clock_notes(now, 2 * 86400, None, now)[0]
    assert "start more than a day ahead" in produce.clock_notes(now + 2 * 86400, 10, 1.0, now)[0]


# ---------------------------------------------------------------- Kafka (the local broker)

@pytest.fixture
def topic():
    if not broker_reachable():
        pytest.fail(f"no Kafka broker at {BOOTSTRAP}: run deploy/kafka/broker start (scripts/test does)")
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = unique("sim")
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic(name, 3, 1)])
    admin.close()
    return name


def consume(topic, readings, timeout=30.0):
    """(key, Message) of every record until `readings` readings arrived, decoded as vigil serve does."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", group_id=None)
    decoder, out, deadline = Decoder(synthetic.SENSORS), [], time.monotonic() + timeout
    while sum(len(m.times) for _, m in out) < readings and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            out.extend((r.key, decoder.decode(r.value, r.key)) for r in batch)
    consumer.close()
    return out


def by_asset(records):
    assets = {}
    for key, m in records:
        assert key == m.asset.encode()
        times, values = assets.setdefault(m.asset, ([], []))
        times.append(m.times)
        values.append(m.values)
    return {a: (np.concatenate(t), np.concatenate(v)) for a, (t, v) in assets.items()}


@pytest.mark.kafka
@pytest.mark.slow
def test_simulate_to_kafka_as_fast_as_possible(topic, tmp_path, capsys):
    argv = ["--assets", "3", "--duration", "40m", "--fault", "pump-2:dropout@30s+10s", "--seed", "7"]
    assert main(["simulate", *argv, "--bootstrap-servers", BOOTSTRAP, "--topic", topic, "--speed", "max",
                 "--start", "2026-01-01T00:00:00Z", "--quiet"]) == 0
    assert "produced 7,200 readings" in capsys.readouterr().out
    assert main(["simulate", *argv, "--out", str(tmp_path), "--quiet"]) == 0
    got = by_asset(consume(topic, 7200))
    assert sorted(got) == ["pump-1", "pump-2", "pump-3"]
    for asset, (times, values) in got.items():
        table = read_csv(tmp_path / f"{asset}.csv")
        assert np.array_equal(times, (T0 + np.arange(2400)) * 1000)
        assert np.array_equal(values, table.values, equal_nan=True)  # live = file, nulls included
    assert np.isnan(got["pump-2"][1][30:40, synthetic.SENSORS.index("flow")]).all()


@pytest.mark.kafka
@pytest.mark.slow
def test_simulate_situations_to_kafka(topic, tmp_path, capsys):
    argv = ["--assets", "2", "--duration", "20m", "--seed", "3", "--stop", "pump-1@00:05+5m", "--outage",
            "pump-2@12m+2m", "--jitter", "0.2", "--clock-step", "pump-1@15m-90s", "--slow-sensor", "temperature/5"]
    assert main(["simulate", *argv, "--bootstrap-servers", BOOTSTRAP, "--topic", topic, "--speed", "max",
                 "--start", "2026-01-01T00:00:00Z", "--quiet"]) == 0
    assert "produced 2,280 readings" in capsys.readouterr().out
    assert main(["simulate", *argv, "--out", str(tmp_path), "--quiet"]) == 0
    records = consume(topic, 2280)
    for asset in ("pump-1", "pump-2"):
        table = read_csv(tmp_path / f"{asset}.csv")
        taken, last = [], -1  # vigil serve's rule: a message not after the asset's last reading is refused
        for _, m in (r for r in records if r[1].asset == asset):
            if m.times[0] > last:
                taken.append(m)
                last = m.times[-1]
        assert np.array_equal(np.concatenate([m.times for m in taken]), np.rint(table.time * 1000))
        assert np.array_equal(np.concatenate([m.values for m in taken]), table.values, equal_nan=True)
    assert read_csv(tmp_path / "pump-1.csv").skipped.count in (89, 90)


@pytest.mark.kafka
@pytest.mark.slow
def test_simulate_live_until_sigterm(topic):
    env = os.environ | {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "vigil", "simulate", "--assets", "2", "--bootstrap-servers",
                             BOOTSTRAP, "--topic", topic, "--rate", "20", "--fault", "pump-1:step@2s+1m"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        lines = []
        while not any("producing to" in line for line in lines):
            line = proc.stderr.readline()
            assert line, f"vigil simulate ended early: {''.join(lines)}"
            lines.append(line)
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and time.monotonic() - t0 < 10, err
    produced = int(out.split("produced ")[1].split(" readings")[0].replace(",", ""))
    assert produced >= 2 * 10 and "fault pump-1 step (motor_current)" in "".join(lines)
    got = by_asset(consume(topic, produced))
    assert sum(len(t) for t, _ in got.values()) == produced  # all flushed before the exit
    for times, _ in got.values():
        assert np.all(np.diff(times) == 1000) and abs(times[0] / 1000 - time.time()) < 60
    current = synthetic.SENSORS.index("motor_current")
    steps = got["pump-1"][1][:, current] - got["pump-2"][1][:len(got["pump-1"][1]), current]
    assert steps[2:].mean() - steps[:2].mean() > 1.5  # the step fault from 2 s on


@pytest.mark.kafka
@pytest.mark.slow
def test_replay_csv_to_kafka(topic, tmp_path, capsys):
    assert main(["simulate", "--assets", "1", "--duration", "31s", "--out", str(tmp_path),
                 "--fault", "pump-1:dropout/pressure@10s+5s", "--quiet"]) == 0
    path = tmp_path / "pump-1.csv"
    table = read_csv(path)
    t0 = time.monotonic()
    assert main(["replay", str(path), "--bootstrap-servers", BOOTSTRAP, "--topic", topic, "--speed", "10",
                 "--quiet"]) == 0
    assert 2.5 < time.monotonic() - t0 < 15  # 30 s of readings at 10x: about 3 s
    assert main(["replay", str(path), "--asset", "pump-x", "--bootstrap-servers", BOOTSTRAP, "--topic", topic,
                 "--speed", "max", "--rebase", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "produced 31 readings in 31 messages" in out and "produced 31 readings in 1 messages" in out
    got = by_asset(consume(topic, 62))
    times, values = got["pump-1"]
    assert np.array_equal(times, np.rint(table.time * 1000)) and np.array_equal(values, table.values, equal_nan=True)
    assert np.isnan(values[10:15, synthetic.SENSORS.index("pressure")]).all()
    rebased, same = got["pump-x"]
    assert abs(rebased[0] / 1000 - time.time()) < 60 and np.array_equal(np.diff(rebased), np.diff(times))
    assert np.array_equal(same, values, equal_nan=True)


@pytest.mark.slow
def test_replay_without_a_broker_says_so(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("t,a\n2026-01-01T00:00:00Z,1\n")
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # a subprocess: kafka-python leaks its sockets when the producer cannot bootstrap
    result = subprocess.run([sys.executable, "-m", "vigil", "replay", str(path), "--bootstrap-servers",
                             f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env=os.environ | {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 2 and f"vigil replay: error: Kafka at 127.0.0.1:{port}:" in result.stderr


@pytest.mark.parametrize("rows", [1, 50, 300])
def test_a_short_series_can_be_generated(rows):
    values, labels = synthetic.generate(rows, seed=0)
    assert values.shape == (rows, len(synthetic.SENSORS)) and np.isfinite(values).all() and labels.shape == (rows,)


# -- a second machine type: fans ------------------------------------------------------------
def test_fans_report_their_own_sensors_driven_like_pumps(tmp_path):
    fans, rows = fleet(assets=2, kind="fan", faults=["fan-2:bearing@5m+1m", "fan-1:stuck/airflow@2m+30s"],
                       slow_sensors=["bearing_temperature/4"])
    pumps, _ = fleet(assets=2, slow_sensors=["temperature/4"])
    assert fans.assets == ("fan-1", "fan-2")
    fan_values, labels = readings(fans, rows)
    pump_values, _ = readings(pumps, rows)
    machine = synthetic.FAN
    # a fan is the pump of the same seed seen through its sensors (before faults)
    assert np.allclose(fan_values[:, :120], machine.readings(pump_values[:, :120]), equal_nan=True)
    written = simulate.write_csvs(fans, rows, tmp_path)
    tables = read_path(tmp_path)
    assert [t.sensors for t in tables] == [machine.sensors] * 2 and [p.name for p in written.files] == \
        ["fan-1.csv", "fan-2.csv"]
    assert np.isnan(tables[0].values[1::4, machine.sensors.index("bearing_temperature")]).all()
    truth = json.loads((tmp_path / "faults.json").read_text())
    assert [f["sensors"] for f in truth["faults"]] == [["vibration", "bearing_temperature"], ["airflow"]]
    stuck = tables[0].values[120:150, machine.sensors.index("airflow")]
    assert np.ptp(stuck) == 0 and labels[0, 120:150].all()  # stuck on its value


@pytest.mark.parametrize("kwargs, message", [
    ({"faults": ["fan-1:stuck/pressure@1m+1m"]}, "unknown sensor 'pressure' of a fan (choose from vibration, "
                                                 "motor_current, speed, bearing_temperature, airflow)"),
    ({"faults": ["fan-1:bearing/vibration@1m+1m"]}, "a bearing fault always changes vibration, bearing_temperature"),
    ({"faults": ["pump-1:bearing@1m+1m"]}, "no asset 'pump-1' (simulating fan-1..fan-1)"),
    ({"slow_sensors": ["temperature/4"]}, "--slow-sensor 'temperature/4': unknown sensor 'temperature' (choose from "
                                          "vibration,"),
])
def test_fan_specs_name_the_fans_sensors(kwargs, message):
    with pytest.raises(SimulationError) as info:
        fleet(kind="fan", **kwargs)
    assert message in str(info.value)


def test_live_fan_readings_carry_the_fans_sensors():
    config, rows = fleet(kind="fan", duration="5s")
    sink = ListSink()
    produce.produce_fleet(simulate.Fleet(config), rows, sink, None, threading.Event())
    body = json.loads(sink.sent[0][1])
    assert sink.sent[0][0] == b"fan-1" and set(body["readings"][0]["values"]) == set(synthetic.FAN.sensors)
