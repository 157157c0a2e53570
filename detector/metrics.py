"""Prometheus metrics of the daemon, on a registry that is passed in, and the HTTP endpoint.

The endpoint serves /metrics (Prometheus text format), /healthz (200 while the consumer
loop is alive) and /readyz (200 once a model is loaded and the broker is reachable).
Per-asset gauges are bounded: an asset that goes quiet has its label sets removed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
from prometheus_client.registry import Collector

from detector.labels import LABELS

NORMALIZED_BUCKETS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
EVENT_TYPES = ("open", "update", "resolve", "storm_start", "storm_end")  # vigil_alert_events_total{type}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BulkHistogram(Collector):
    """A histogram observed a whole batch at a time (numpy), exposed like a Prometheus Histogram."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...], registry: CollectorRegistry):
        self.name, self.documentation = name, documentation
        self.bounds = np.asarray(buckets, np.float64)
        self.counts = np.zeros(len(buckets) + 1, np.int64)  # last: above the largest bound
        self.total = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float64)
        values = values[np.isfinite(values)]
        index = np.searchsorted(self.bounds, values, side="left")  # le semantics: v <= bound
        with self._lock:
            self.counts += np.bincount(index, minlength=len(self.counts))
            self.total += float(values.sum())

    def collect(self):
        with self._lock:
            cumulative = np.cumsum(self.counts).tolist()
            total = self.total
        buckets = [(f"{b:g}" if b != int(b) else f"{b:.1f}", c) for b, c in zip(self.bounds.tolist(), cumulative)]
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets + [("+Inf", cumulative[-1])],
                                    sum_value=total)


class AssetGauges(Collector):
    """The latest score, normalised score, alert state and sensor shares of each asset,
    set a whole batch at a time (numpy) and exposed as the gauges vigil_asset_score,
    vigil_asset_normalized_score, vigil_asset_alert_open and vigil_asset_sensor_share."""

    def __init__(self, registry: CollectorRegistry):
        self.sensors: tuple[str, ...] = ()
        self._row: dict[str, int] = {}  # asset -> row of the arrays
        self._free: list[int] = []
        self._values = np.zeros((0, 3))  # score, normalised score, alert open
        self._shares = np.zeros((0, 0))
        self._lock = threading.Lock()
        registry.register(self)

    def set_sensors(self, sensors: tuple[str, ...]) -> None:
        """A model with these sensors serves from now on: the shares start afresh."""
        with self._lock:
            if sensors != self.sensors:
                self.sensors = tuple(sensors)
                self._shares = np.zeros((len(self._values), len(sensors)))

    def update(self, assets: list[str], score: np.ndarray, normalized: np.ndarray, alert_open: np.ndarray,
               shares: np.ndarray) -> None:
        """Set the gauges of distinct `assets` (shares: [len(assets), sensors])."""
        with self._lock:
            rows = np.fromiter(map(self._row_for, assets), np.int64, len(assets))
            self._values[rows] = np.stack([score, normalized, alert_open], axis=1)
            self._shares[rows] = shares

    def _row_for(self, asset: str) -> int:
        row = self._row.get(asset)
        if row is None:
            if not self._free:
                old = len(self._values)
                size = max(64, 2 * old)
                self._values = np.concatenate([self._values, np.zeros((size - old, 3))])
                self._shares = np.concatenate([self._shares, np.zeros((size - old, len(self.sensors)))])
                self._free = list(range(size - 1, old - 1, -1))
            row = self._row[asset] = self._free.pop()
        return row

    def forget(self, asset: str) -> None:
        with self._lock:
            row = self._row.pop(asset, None)
            if row is not None:
                self._free.append(row)

    def collect(self):
        with self._lock:
            assets = list(self._row)
            rows = list(self._row.values())
            values, shares, sensors = self._values[rows], self._shares[rows], self.sensors
        names = [(a,) for a in assets]
        yield RowsFamily("vigil_asset_score", "Latest window score per asset", ("asset",), names, values[:, 0])
        yield RowsFamily("vigil_asset_normalized_score", "Latest score / threshold per asset (1.0 = at threshold)",
                         ("asset",), names, values[:, 1])
        yield RowsFamily("vigil_asset_alert_open", "1 while the asset has an open alert, else 0", ("asset",),
                         names, values[:, 2])
        yield RowsFamily("vigil_asset_sensor_share", "Share (0..1) of the asset's latest window score from each sensor",
                         ("asset", "sensor"), [(a, sensor) for a in assets for sensor in sensors], shares.reshape(-1))


class RowsFamily(Metric):
    """A gauge family of many label sets (the per-asset gauges: 55,000 series for 5,000 assets of
    8 sensors), written to the text format by exposition() in one pass: prometheus_client's
    generate_latest takes about 0.6 s for them, a scrape the loop waits on for the GIL. Its
    samples (for get_sample_value and other readers) are made only when asked for.

    chunks: (label names, label values [one tuple per series], values [series]); with
    extra labels (Merged) a chunk's series carry them too."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = (), rows: list = (),
                 values: np.ndarray = np.zeros(0), chunks: list | None = None):
        super().__init__(name, documentation, "gauge")
        self.chunks = chunks if chunks is not None else [(tuple(labelnames), rows, np.asarray(values, float))]

    @property
    def samples(self):
        return [Sample(self.name, dict(zip(names, row)), value)
                for names, rows, values in self.chunks for row, value in zip(rows, values.tolist())]

    @samples.setter
    def samples(self, _value):  # Metric.__init__ sets an empty list; the samples come from the chunks
        pass

    def with_labels(self, labels: dict[str, str]) -> RowsFamily:
        """The same series, each also labelled `labels`."""
        if not labels:
            return self
        keys, values = tuple(labels), tuple(labels.values())
        return RowsFamily(self.name, self.documentation,
                          chunks=[(names + keys, [row + values for row in rows], v) for names, rows, v in self.chunks])

    def text(self) -> str:
        """The family in the Prometheus text format, byte for byte as generate_latest writes it."""
        documentation = self.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        out = [f"# HELP {self.name} {documentation}\n# TYPE {self.name} gauge\n"]
        escaped: dict[str, str] = {}

        def escape(v: str) -> str:
            e = escaped.get(v)
            if e is None:
                e = escaped[v] = v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
            return e

        for names, rows, values in self.chunks:
            order = sorted(range(len(names)), key=names.__getitem__)  # labels in name order, as prometheus_client
            line = f"{self.name}{{" + ",".join(f'{names[i]}="%s"' for i in order) + "} %s\n"
            for row, value in zip(rows, _go_floats(values)):
                out.append(line % (*[escape(row[i]) for i in order], value))
        return "".join(out)


def _go_floats(values: np.ndarray) -> list[str]:
    """Values as prometheus_client writes them (floatToGoString): repr() but for NaN, infinities
    and values from 1e6 up."""
    text = list(map(repr, values.tolist()))
    for i in np.flatnonzero(~(np.abs(values) < 1e6)).tolist():
        text[i] = floatToGoString(values[i])
    return text


def exposition(collector) -> bytes:
    """generate_latest(collector), with RowsFamily families written by RowsFamily.text()."""
    out: list[str] = []
    others: list[Metric] = []

    def flush():
        if others:
            out.append(generate_latest(_Families(list(others))).decode())
            others.clear()

    for family in collector.collect():
        if isinstance(family, RowsFamily):
            flush()
            out.append(family.text())
        else:
            others.append(family)
    flush()
    return "".join(out).encode()


class _Families:
    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self):
        return self.families


class StormGauges(Collector):
    """The alert-storm state of each watched tracker (detector.storm.StormTracker, one per scope),
    read at scrape time: vigil_alert_storm (1 during a storm, else 0), vigil_alert_storm_alerting_assets,
    vigil_alert_storm_recent_assets and vigil_alert_storm_known_assets, labelled by scope."""

    def __init__(self, registry: CollectorRegistry):
        self._trackers: dict[str, object] = {}  # scope -> tracker
        self._lock = threading.Lock()
        registry.register(self)

    def watch(self, tracker) -> None:
        """Expose this tracker's state (replacing any tracker of the same scope)."""
        with self._lock:
            self._trackers[tracker.scope] = tracker

    def unwatch(self, scope: str) -> None:
        """Remove a scope's series (e.g. a route that went away)."""
        with self._lock:
            self._trackers.pop(scope, None)

    def collect(self):
        with self._lock:
            trackers = list(self._trackers.items())
        families = [
            (GaugeMetricFamily("vigil_alert_storm", "1 during an alert storm (many assets opened alerts at once), "
                               "else 0", labels=["scope"]), lambda t: float(t.active)),
            (GaugeMetricFamily("vigil_alert_storm_alerting_assets", "Assets with an open alert, per storm scope",
                               labels=["scope"]), lambda t: t.alerting),
            (GaugeMetricFamily("vigil_alert_storm_recent_assets", "Assets whose open alert opened within "
                               "storm_window_seconds of reading time (what starts a storm)", labels=["scope"]),
             lambda t: t.recent),
            (GaugeMetricFamily("vigil_alert_storm_known_assets", "Assets the storm shares are taken of",
                               labels=["scope"]), lambda t: max(t.assets, t.alerting)),
        ]
        for family, value in families:
            for scope, tracker in trackers:
                family.add_metric([scope], value(tracker))
            yield family


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        r = dict(registry=registry, namespace="vigil")
        self.messages = Counter("messages_consumed", "Kafka records consumed", **r)
        self.readings = Counter("readings_consumed", "Readings decoded from consumed records", **r)
        self.scored = Counter("readings_scored", "Readings whose window was scored", **r)
        self.unknown_sensors = Counter("unknown_sensors", "Sensor values ignored because the model does not know the sensor", **r)
        self.dead_letters = Counter("dead_letters", "Records sent to the dead-letter topic, by reason", ["reason"], **r)
        self.per_asset = AssetGauges(registry)
        self.normalized_hist = BulkHistogram("vigil_normalized_score",
                                             "Distribution of score / threshold over all scored windows",
                                             NORMALIZED_BUCKETS, registry)
        self.open_alerts = Gauge("alerts_open", "Alerts currently open", **r)
        self.alert_events = Counter("alert_events", "Alert events produced, by type", ["type"], **r)
        self.batch_seconds = Histogram("scoring_batch_duration_seconds",
                                       "Time from handing a micro-batch to the scorer until its scores are read",
                                       buckets=LATENCY_BUCKETS, **r)
        self.latency = BulkHistogram("vigil_end_to_end_latency_seconds", "Reading time (or Kafka timestamp) to scored",
                                     LATENCY_BUCKETS, registry)
        self.lag = Gauge("consumer_lag", "Records behind the end of each assigned partition", ["topic", "partition"], **r)
        self.last_message = Gauge("last_message_timestamp_seconds", "Kafka timestamp of the last processed record", **r)
        self.assets = Gauge("assets_tracked", "Assets with a window in memory", **r)
        self.assets_evicted = Counter("assets_evicted", "Assets dropped because max_assets was reached", **r)
        self.assets_off = Gauge("assets_off", "Assets whose newest reading meets the model's off condition "
                                "(switched off: not scored)", **r)
        self.windows_sparse = Counter("windows_mostly_missing", "Full windows not scored because fewer than the "
                                      "model's minimum share of their cells was observed", **r)
        self.model_created = Gauge("model_created_timestamp_seconds", "Unix time the serving model was trained", **r)
        self.model_info = Gauge("model_info", "The serving model and the alert rule in force (value 1)",
                                ["version", "window", "sensors", "threshold", "alert_k", "alert_n", "alert_rule_source",
                                 "interval_seconds"],
                                **r)
        self.model_reloads = Counter("model_reloads", "Model reload attempts, by result", ["result"], **r)
        self.broker_up = Gauge("broker_up", "1 while the Kafka broker is reachable", **r)
        self.storms = StormGauges(registry)
        self.alert_labels = Counter("alert_labels", "Operators' labels of alerts (vigil label), by label",
                                    ["label"], **r)
        self.alerts_unlabelled = Gauge("alerts_unlabelled", "Open alerts opened more than label_wait_seconds ago "
                                       "that no operator has labelled", **r)
        for label in LABELS:
            self.alert_labels.labels(label)
        for kind in EVENT_TYPES:
            self.alert_events.labels(kind)
        for result in ("ok", "refused"):
            self.model_reloads.labels(result)

    def set_model(self, version: str, window: int, sensors: tuple[str, ...], threshold: float,
                  created: float | None, alert_k: int, alert_n: int, alert_rule_source: str,
                  interval_seconds: float | None = None) -> None:
        """alert_k of alert_n: the alert rule in force; alert_rule_source: "model" (the model's
        persistence rule) or "override" (alert_k and/or alert_n set for the daemon);
        interval_seconds: the model's sampling interval ("" when unknown: an older model)."""
        self.model_info.clear()
        self.model_info.labels(version, str(window), ",".join(sensors), f"{threshold:.6g}", str(alert_k),
                               str(alert_n), alert_rule_source,
                               "" if interval_seconds is None else f"{interval_seconds:g}").set(1)
        self.per_asset.set_sensors(sensors)
        if created is not None:
            self.model_created.set(created)

    def forget_asset(self, asset: str) -> None:
        self.per_asset.forget(asset)


# With routes (detector.routes) each route's pipeline has its own ServiceMetrics, and the
# endpoint shows them together with a `model` label; these families are the daemon's own.
DAEMON_FAMILIES = frozenset({"vigil_consumer_lag", "vigil_broker_up"})


class Merged(Collector):
    """Metrics of several registries as one set of families: each source is (registry,
    extra labels, which families to take); families of the same name are merged into one,
    their samples told apart by the extra labels (e.g. model="pumps")."""

    def __init__(self, sources: list[tuple[CollectorRegistry, dict[str, str], Callable[[str], bool]]]):
        self.sources = sources

    def describe(self):
        return []  # the names are known only by collecting; the sources are not registered elsewhere

    def collect(self):
        found: dict[str, list] = {}
        for registry, labels, take in list(self.sources):  # a shadow may come or go meanwhile
            for family in registry.collect():
                if take(family.name):
                    found.setdefault(family.name, []).append((family, labels))
        for name, parts in found.items():
            if len(parts) == 1 and not parts[0][1]:  # one source, nothing to add: as it is (no copy)
                yield parts[0][0]
                continue
            family = parts[0][0]
            if isinstance(family, RowsFamily):
                yield RowsFamily(name, family.documentation,
                                 chunks=[c for f, labels in parts for c in f.with_labels(labels).chunks])
                continue
            out = Metric(name, family.documentation, family.type, family.unit)
            for family, labels in parts:
                out.samples.extend(s._replace(labels={**s.labels, **labels}) for s in family.samples)
            yield out


class Health:
    """Liveness (the loop beats) and readiness (model loaded, broker reachable)."""

    def __init__(self, stale_seconds: float = 60.0):
        self.stale_seconds = stale_seconds
        self._beat = time.monotonic()
        self.model_loaded = False
        self.broker_ok = False
        self.stopping = False

    def beat(self) -> None:
        self._beat = time.monotonic()

    @property
    def alive(self) -> bool:
        return not self.stopping and time.monotonic() - self._beat < self.stale_seconds

    @property
    def ready(self) -> bool:
        return self.alive and self.model_loaded and self.broker_ok


def serve_http(address: str, registry: CollectorRegistry, health: Health) -> ThreadingHTTPServer:
    """Start the /metrics, /healthz, /readyz server on HOST:PORT in a daemon thread."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"metrics address must be HOST:PORT, got {address!r}")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, status, ctype = exposition(registry), 200, CONTENT_TYPE_LATEST
            elif path in ("/healthz", "/readyz"):
                ok = health.alive if path == "/healthz" else health.ready
                body, status, ctype = (b"ok\n" if ok else b"not ok\n"), (200 if ok else 503), "text/plain"
            else:
                body, status, ctype = b"not found: try /metrics, /healthz, /readyz\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep the daemon's log for the daemon
            pass

    server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
