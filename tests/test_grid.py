"""Time-aware windows (detector.grid): one set of rules for training, `vigil score` and the daemon."""

import json

import numpy as np
import pytest
from flax import nnx
from prometheus_client import CollectorRegistry

from detector.alerts import AlertPolicy
from detector.artifact import TrainedModel
from detector.csvdata import read_csv
from detector.table import SensorTable, admit_late
from detector.grid import TimeGrid, place
from detector.metrics import ServiceMetrics
from detector.model import VAE, ModelConfig
from detector.offline import score_table
from detector.pipeline import Pipeline, Record
from detector.preprocessing import Scaler
from detector.threshold import Persistence, Threshold
from detector.windows import AssetWindows

T0 = 1_795_460_400_000
SENSORS = ("a", "b", "c")


def test_readings_are_placed_on_intervals():
    grid = TimeGrid.of(4, 1.0)  # 4 intervals of 1 s; a gap over 4 s restarts
    t = T0 + np.array([0, 1000, 2020, 2400, 2900, 5000, 20000, 21000])
    v = np.arange(16, dtype=np.float32).reshape(8, 2)
    p = place(t, v, grid)
    # 2020 ms and 2400 ms share interval 2 (their mean), 2900 ms rounds to 3, 4 s has no reading,
    # 20 s is 15 s after the one before: a new run
    assert p.slot.tolist() == [0, 1, 2, 2, 3, 5, 6, 7]
    assert p.position.tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    np.testing.assert_array_equal(p.rows[2], [5.0, 6.0])
    assert np.isnan(p.rows[4]).all()
    # full windows within one run, at least half of the cells observed
    assert p.scorable.tolist() == [False, False, False, True, True, True, False, False]
    # the 2020 ms reading's window ends with its interval's mean so far (itself), not yet full
    assert p.partial.tolist() == [2] and p.partial_rows.tolist() == [[4.0, 5.0]]


def test_mostly_missing_windows_are_not_scored():
    # a model on 1 s data fed 10 s data: one interval in ten observed
    grid = TimeGrid.of(20, 1.0, max_gap_seconds=60.0)
    t = T0 + np.arange(50) * 10_000
    p = place(t, np.ones((50, 2), np.float32), grid)
    assert p.position.max() == 490 and not p.scorable.any()
    # as 1 s data it is scored once the window is full
    p = place(T0 + np.arange(50) * 1000, np.ones((50, 2), np.float32), grid)
    assert p.scorable.sum() == 50 - 19


def _series(rng, n, sensors):
    """Readings with jitter, doubled and skipped intervals, gaps that restart the window, missing values."""
    steps = rng.choice([1000] * 6 + [350, 500, 2000, 3000, 9000], size=n) + rng.integers(-150, 150, n)
    t = T0 + np.cumsum(np.maximum(steps, 1))
    v = rng.normal(size=(n, sensors)).astype(np.float32)
    v[rng.random((n, sensors)) < 0.15] = np.nan
    return t, v


@pytest.mark.slow
@pytest.mark.parametrize("interval", [1.0, None])
def test_daemon_windows_equal_the_offline_ones(interval):
    """AssetWindows, fed in batches of any size mixed with another asset, yields exactly the
    windows `place` gives for the whole series (bit for bit, averaged intervals included)."""
    rng = np.random.default_rng(7)
    window, sensors = 6, 3
    for _ in range(20):
        grid = TimeGrid.of(window, interval)
        t, v = _series(rng, 300, sensors)
        p = place(t, v, grid)
        partial = dict(zip(p.partial.tolist(), range(len(p.partial))))
        expect = {}
        for i, s in enumerate(p.slot.tolist()):
            if i in partial:
                if p.partial_scorable[partial[i]]:
                    expect[i] = p.windows_of_partial(window)[partial[i]]
            elif p.scorable[s]:
                expect[i] = p.rows[s - window + 1:s + 1]
        windows = AssetWindows(window, sensors, grid=grid)
        got, i = {}, 0
        while i < len(t):
            idx = np.arange(i, min(i + int(rng.integers(1, 40)), len(t)))
            other = T0 + np.arange(len(idx)) * 1000 + i * 1000  # a regular asset in the same batches
            assets = ["x"] * len(idx) + ["y"] * len(idx)
            rows, found, _ = windows.append(assets, np.r_[t[idx], other],
                                            np.r_[v[idx], np.zeros((len(idx), sensors), np.float32)])
            for r, w in zip(rows.tolist(), found):
                if r < len(idx):
                    got[int(idx[r])] = w
            i = idx[-1] + 1
        assert sorted(got) == sorted(expect)
        for k in got:
            np.testing.assert_array_equal(got[k], expect[k])


def _model(interval):
    cfg = ModelConfig(window=5, hidden=(8,), latent=2)
    return TrainedModel(SENSORS, cfg, Scaler(np.zeros(3, np.float32), np.ones(3, np.float32)),
                        VAE(cfg, 3, rngs=nnx.Rngs(0)), Threshold(1.0, "quantile"), Persistence(2, 3),
                        interval_seconds=interval, version="v1")


def _stream(model, times, values) -> tuple[Pipeline, list[Record]]:
    """A pipeline listing its scores, and asset p1's readings as one record each."""
    pipeline = Pipeline(model, ServiceMetrics(CollectorRegistry()), AlertPolicy(update_heartbeat_seconds=0))
    pipeline.emit_scores = True
    records = [Record("r", 0, i, b"p1", json.dumps(
        {"asset": "p1", "ts": int(ts), "values": {s: (None if np.isnan(x) else float(x)) for s, x in zip(SENSORS, row)}}
    ).encode(), int(ts)) for i, (ts, row) in enumerate(zip(times, values))]
    return pipeline, records


def test_offline_and_daemon_scores_agree_with_jitter_gaps_and_a_clock_step():
    rng = np.random.default_rng(3)
    model = _model(1.0)
    t, v = _series(rng, 400, 3)
    t[200:] -= 12_000  # the clock steps back 12 s: the readings before the newest are left out ...
    keep = np.r_[True, t[1:] > np.maximum.accumulate(t)[:-1]]
    table = SensorTable("x.csv", [str(x) for x in t[keep]], t[keep] / 1000, SENSORS, v[keep], None)
    offline = score_table(model, table)

    # ... by both: the daemon dead-letters them (out_of_order), `vigil score` skips them on reading
    pipeline, records = _stream(model, t, v)
    scores, dead = {}, 0
    for lo in range(0, len(records), 37):
        result = pipeline.process(records[lo:lo + 37], now_ms=int(t.max()))
        scores.update({s["ts"]: s for s in result.scores})
        dead += len(result.dead_letters)
    assert dead == (~keep).sum() > 0
    times = t[keep].tolist()
    scored = np.isfinite(offline.score)
    assert sorted(scores) == [times[i] for i in np.flatnonzero(scored)]
    assert 0 < scored.sum() < keep.sum()  # gaps restart windows: some rows are not scored
    daemon = np.array([scores[times[i]]["score"] for i in np.flatnonzero(scored)], np.float32)
    np.testing.assert_allclose(daemon, offline.score[scored], rtol=1e-5, atol=1e-6)
    flags = np.array([scores[times[i]]["is_anomaly"] for i in np.flatnonzero(scored)])
    np.testing.assert_array_equal(flags, offline.flags[scored])


def test_late_readings_count_the_same_in_files_and_the_stream(tmp_path):
    """Readings up to one interval late join the newest interval in both paths; repeats of
    the newest time and older readings are left out (files) or dead-lettered (the daemon)."""
    rng = np.random.default_rng(5)
    model = _model(1.0)
    t, v = _series(rng, 300, 3)
    order = list(range(len(t)))
    late = []
    for i in rng.choice(np.arange(30, len(t) - 1), 40, replace=False).tolist():
        late.append((i, t[i] - int(rng.integers(1, 999))))  # within the interval: counts
    for i in rng.choice(np.arange(30, len(t) - 1), 10, replace=False).tolist():
        late.append((i, t[i] - int(rng.integers(1000, 5000))))  # older: refused
    for i in rng.choice(np.arange(30, len(t) - 1), 5, replace=False).tolist():
        late.append((i, t[i]))  # a repeat: refused
    times, values = [], []
    extra = {}
    for i, ts in late:
        extra.setdefault(i, []).append((ts, rng.normal(size=3).astype(np.float32)))
    for i in order:
        times.append(int(t[i]))
        values.append(v[i])
        for ts, row in extra.get(i, []):
            times.append(int(ts))
            values.append(row)
    times, values = np.array(times), np.array(values)
    path = tmp_path / "late.csv"
    with open(path, "w") as f:
        f.write("t," + ",".join(SENSORS) + "\n")
        for ts, row in zip(times, values):
            f.write(f"{ts / 1000:.3f}," + ",".join("" if np.isnan(x) else repr(float(x)) for x in row) + "\n")
    table = admit_late(read_csv(path), model.interval_seconds)
    offline = score_table(model, table)

    pipeline, records = _stream(model, times, values)
    scores, dead = [], 0
    for lo in range(0, len(records), 23):
        result = pipeline.process(records[lo:lo + 23], now_ms=int(times.max()))
        scores += result.scores
        dead += len(result.dead_letters)
    assert table.late > 30 and dead == table.skipped.count >= 10
    scored = np.isfinite(offline.score)
    assert len(scores) == scored.sum() > 0
    np.testing.assert_allclose([s["score"] for s in scores], offline.score[scored], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal([s["is_anomaly"] for s in scores], offline.flags[scored])
    # a late reading's score is that of the newest interval with it averaged in: not the one before
    first_late = int(np.flatnonzero(np.diff(table.time) == 0)[0]) + 1
    assert np.isfinite(offline.score[first_late - 1:first_late + 1]).all()
    assert offline.score[first_late] != offline.score[first_late - 1]


def test_a_model_on_1s_data_is_not_alerted_by_10s_data():
    """10 s readings on a 1 s model's grid: one interval in ten observed, so no window is
    scored and nothing alerts, however far the values are from normal."""
    model = _model(1.0)
    pipeline = Pipeline(model, ServiceMetrics(CollectorRegistry()))
    records = [Record("r", 0, i, b"p1", json.dumps({"asset": "p1", "ts": T0 + i * 10_000,
                                                   "values": {"a": 100.0, "b": -100.0, "c": 50.0}}).encode(),
                      T0 + i * 10_000) for i in range(100)]
    result = pipeline.process(records, now_ms=T0 + 10**6)
    assert result.scored == 0 and not result.alerts
    # the same readings 1 s apart fill the window and alert
    records = [r._replace(value=r.value.replace(b'"ts": %d' % (T0 + i * 10_000), b'"ts": %d' % (T0 + i * 1000)))
               for i, r in enumerate(records)]
    pipeline = Pipeline(model, ServiceMetrics(CollectorRegistry()))
    result = pipeline.process(records, now_ms=T0 + 10**6)
    assert result.scored == 96 and [e.type for e in result.alerts][:1] == ["open"]
