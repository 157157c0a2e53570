"""Recent normal data from Kafka for retraining.

The readings topic over a time range becomes one series per asset; the stretches around
alerts that were open in that range (read from the alerts topic) are cut out, so that
faults do not become "normal". Records are selected by their Kafka timestamp.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from detector.alerts import epoch_ms
from detector.table import SensorTable
from detector.labels import LABELS, latest_labels
from detector.messages import BadMessage, Decoder
from detector.routes import Router, asset_filter, asset_of
from detector.topics import MissingTopic, SourceError, read_records  # noqa: F401 (SourceError: part of this API)

LABEL_LOOKBACK_SECONDS = 30 * 86400  # labels given this long before the retraining range still count


@dataclass(frozen=True)
class Stretch:
    """[start, end] in epoch seconds of one asset that must not be trained on: an alert's, from
    `margin` seconds before it opened to `margin` after it resolved."""

    asset: str
    start: float
    end: float
    alert_id: str = ""
    margin: float = 0.0


def alert_stretches(records, margin_seconds: float, until_s: float) -> list[Stretch]:
    """Stretches to leave out: from `margin` before each alert opened to `margin` after it
    resolved (or to `until_s` when it was still open). Unparseable events are skipped."""
    alerts: dict[str, dict] = {}
    for record in records:
        try:
            event = json.loads(record.value)
            opened, at = epoch_ms(event["opened_at"]) / 1000, epoch_ms(event["time"]) / 1000
            alert = alerts.setdefault(event["alert_id"], {"asset": event["asset"], "start": opened, "end": None})
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if event.get("type") == "resolve":
            alert["end"] = at
    return [Stretch(a["asset"], a["start"] - margin_seconds,
                    (a["end"] if a["end"] is not None else until_s) + margin_seconds, alert_id, margin_seconds)
            for alert_id, a in alerts.items()]


def readings_by_asset(records, sensors: tuple[str, ...], assets: Router | None = None
                      ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Decode reading records into {asset: (times ms [n], values [n, sensors])}, sorted by time,
    duplicates dropped. Returns that and the number of records that could not be decoded.
    assets: only the assets it matches (detector.routes.asset_filter; None: all)."""
    decoder = Decoder(sensors)
    times, values = defaultdict(list), defaultdict(list)
    bad = 0
    now_ms = int(time.time() * 1000)
    for record in records:
        if assets is not None:
            asset = asset_of(record)
            if asset is not None and assets(asset) is None:
                continue
        try:
            message = decoder.decode(record.value, record.key, now_ms)
        except BadMessage:
            bad += 1
            continue
        times[message.asset].append(message.times)
        values[message.asset].append(message.values)
    series = {}
    for asset in times:
        t = np.concatenate(times[asset])
        v = np.concatenate(values[asset])
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        keep = np.concatenate([[True], np.diff(t) > 0])
        series[asset] = (t[keep], v[keep])
    return series, bad


def cut_stretches(asset: str, times_ms: np.ndarray, values: np.ndarray, sensors: tuple[str, ...],
                  stretches: list[Stretch], min_rows: int, source: str) -> list[SensorTable]:
    """One asset's series as tables of the contiguous parts outside its stretches
    (parts shorter than min_rows are dropped)."""
    seconds = times_ms / 1000.0
    excluded = np.zeros(len(seconds), bool)
    for s in stretches:
        if s.asset == asset:
            excluded |= (seconds >= s.start) & (seconds <= s.end)
    tables = []
    edges = np.flatnonzero(np.diff(np.concatenate([[1], excluded.astype(np.int8), [1]])))
    for start, stop in zip(edges[::2], edges[1::2]):  # runs of kept rows
        if stop - start >= min_rows:
            part = slice(start, stop)
            raw = [str(ms) for ms in times_ms[part].tolist()]
            tables.append(SensorTable(f"{source}:{asset}", raw, seconds[part], sensors, values[part], None))
    return tables


def from_files(path: str, sensors: tuple[str, ...], min_rows: int, strict_time: bool = False,
               warn: Callable[[SensorTable], None] = lambda _t: None,
               interval_seconds: float | None = None) -> list[SensorTable]:
    """Recent data from CSV files; rows labelled anomalous (when there is a label column) are left out.
    strict_time as csvdata.read_csv; rows less than interval_seconds late are put back
    (table.admit_late); warn is called with each file that had rows left out or put back for their time."""
    from detector.datafiles import read_path
    from detector.table import admit_late
    from training.evaluation import runs

    tables = []
    for t in read_path(path, strict_time=strict_time):
        t = admit_late(t, interval_seconds)
        if t.skipped is not None or t.late:
            warn(t)
        if t.labels is None or not t.labels.any():
            tables.append(t)
            continue
        stretches = [Stretch("", float(t.time[a]), float(t.time[b - 1])) for a, b in runs(t.labels)]
        tables += cut_stretches("", (t.time * 1000).astype(np.int64), t.select(sensors), sensors, stretches,
                                min_rows, t.path)
    return tables


def from_kafka(options: dict, topic: str, alerts_topic: str | None, since_seconds: float, margin_seconds: float,
               sensors: tuple[str, ...], min_rows: int, say: Callable[[str], None] = lambda _m: None,
               assets: tuple[str, ...] = (), labels_topic: str | None = None) -> Recent:
    """The last since_seconds of the readings topic, one series per asset, minus the stretches
    (+- margin) of the alerts on alerts_topic (None: nothing left out).
    assets: only assets these globs or ids match (a route's, on a topic of several machine types).
    An asset that sent fewer than half of the model's sensors is left out and reported (another
    machine type, which may share a sensor name or two with the model's).
    labels_topic: operators' labels (detector.labels): the stretch of an alert labelled
    false_alarm is trained on (it was normal) and also comes back in Recent.false_alarms; one
    labelled confirmed is left out and comes back labelled (1 while the alert was open) in
    Recent.labelled, for the gate; maintenance and unlabelled alerts are left out."""
    until_ms = int(time.time() * 1000)
    since_ms = until_ms - int(since_seconds * 1000)
    stretches = []
    if alerts_topic is not None:  # an alert opened up to a day before the range may still be open in it
        stretches = alert_stretches(read_records(options, alerts_topic, since_ms - 86_400_000, until_ms),
                                    margin_seconds, until_ms / 1000)
    verdicts = {}
    if labels_topic is not None and stretches:
        try:
            labels = latest_labels(read_records(options, labels_topic,
                                                since_ms - LABEL_LOOKBACK_SECONDS * 1000, until_ms))
        except MissingTopic as e:  # Kafka makes a topic on its first record: none yet is no label yet
            say(f"{e}: no labels yet")
            labels = {}
        verdicts = {s.alert_id: labels[s.alert_id].label for s in stretches if s.alert_id in labels}
    left_out = [s for s in stretches if verdicts.get(s.alert_id) != "false_alarm"]
    say(f"reading {topic}: the last {since_seconds / 3600:g} h, leaving out {len(left_out)} alert stretch(es)"
        + (f" ({len(stretches) - len(left_out)} labelled false_alarm: trained on)" if len(left_out) < len(stretches)
           else ""))
    last = [0.0]

    def progress(n: int) -> None:
        if time.monotonic() - last[0] > 5:
            last[0] = time.monotonic()
            say(f"  {n} records read")

    series, bad = readings_by_asset(read_records(options, topic, since_ms, until_ms, progress), sensors,
                                    asset_filter(assets) if assets else None)
    other = sorted(a for a, (_, v) in series.items() if 2 * np.isfinite(v).any(axis=0).sum() < len(sensors))
    if other:
        say(f"left out {len(other)} asset(s) that sent fewer than half of the model's sensors ({', '.join(other[:3])}"
            f"{', ...' if len(other) > 3 else ''}): another machine type? --assets takes only the model's")
    tables = []
    for asset, (times_ms, values) in sorted(series.items()):
        if asset not in other:
            tables += cut_stretches(asset, times_ms, values, sensors, left_out, min_rows, topic)
    labelled, false_alarms = [], []
    for s in stretches:
        verdict = verdicts.get(s.alert_id)
        if verdict not in ("confirmed", "false_alarm") or s.asset not in series or s.asset in other:
            continue
        times_ms, values = series[s.asset]
        seconds = times_ms / 1000.0
        rows = (seconds >= s.start) & (seconds <= s.end)
        if not rows.any():
            continue
        inside = (seconds[rows] >= s.start + s.margin) & (seconds[rows] <= s.end - s.margin)
        table = SensorTable(f"{topic}:{s.asset}:alert {s.alert_id} ({verdict})",
                            [str(ms) for ms in times_ms[rows].tolist()], seconds[rows], sensors, values[rows],
                            (inside if verdict == "confirmed" else np.zeros(int(rows.sum()), bool)).astype(np.int8))
        (labelled if verdict == "confirmed" else false_alarms).append(table)
    say(f"read {sum(len(t) for t, _ in series.values())} readings of {len(series)} asset(s); "
        f"{bad} undecodable record(s) skipped")
    counts = {label: sum(1 for v in verdicts.values() if v == label) for label in LABELS}
    summary = {"topic": topic, "since_seconds": since_seconds, "assets": len(series) - len(other),
               "assets_without_the_models_sensors": len(other), "asset_patterns": list(assets),
               "undecodable_records": bad, "alerts_topic": alerts_topic, "alert_stretches_left_out": len(left_out),
               "labels_topic": labels_topic, "labels": counts}
    return Recent(tables, summary, labelled, false_alarms)


@dataclass
class Recent:
    """Recent data from Kafka: tables to train on (and hold out), what was read, and the stretches
    of labelled alerts: confirmed faults (labels 1 while open) and false alarms (all 0)."""

    tables: list[SensorTable]
    summary: dict
    labelled: list[SensorTable] = field(default_factory=list)
    false_alarms: list[SensorTable] = field(default_factory=list)