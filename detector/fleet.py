"""The daemon's routes (detector.routes), each a Pipeline with its own model, hot reload,
windows, alert rule, threshold and storm scope, behind one consumer loop.

A batch of records is split by asset: each route's pipeline gets its records (in order);
a record whose asset matches no route is dead-lettered with reason `no_model`. A daemon
with one model has one route that takes every record as it comes, so it works as before:
its metrics and events carry no route name. With routes, each route's metrics are kept on
a registry of its own and shown on the endpoint with a `model` label (metrics.Merged).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry

from detector.artifact import ArtifactError
from detector.labels import parse_label
from detector.messages import BadMessage, Decoded
from detector.metrics import DAEMON_FAMILIES, Merged, ServiceMetrics
from detector.pipeline import (BatchResult, DeadLetter, Pipeline, Record, Submitted, Topics, batch_offsets,
                               dead_letter_message)
from detector.registry import current_version, is_registry, load_model_or_registry
from detector.reload import HotReload, ModelWatcher
from detector.routes import MAX_REMEMBERED, Router, asset_of
from detector.settings import ServeSettings
from detector.shadow import Shadow

log = logging.getLogger("vigil.serve")
NO_MODEL = "no_model"  # the dead-letter reason of a record whose asset no route serves


@dataclass
class FleetBatch:
    """A batch handed to the routes' pipelines, waiting for finish()."""

    parts: list[tuple[Pipeline, Submitted]]
    result: BatchResult  # offsets of the whole batch, and its no_model dead letters
    shadows: list[tuple[Pipeline, Submitted]] = field(default_factory=list)  # the shadows' parts


class Fleet:
    def __init__(self, settings: ServeSettings, metrics: ServiceMetrics, registry: CollectorRegistry):
        """metrics: the daemon's, on a registry of its own; registry: the one its endpoint shows.
        With one route (the `model` setting) the pipeline uses `metrics`; with routes each route
        has a registry of its own. `registry` shows them all, and a shadow's while it runs (Merged)."""
        routes = settings.all_routes()
        self.metrics, self.topics = metrics, Topics(settings.alerts_topic, settings.dlq_topic, settings.scores_topic)
        self.router = Router(routes)
        self._by_key: dict[bytes | None, int | None] = {}  # record key -> route (see _routes_of)
        self.single = len(routes) == 1 and routes[0].matches_all  # the daemon's `model` only: no routing
        self.pipelines: list[Pipeline] = []
        self.reloads: list[HotReload] = []
        self.shadows: list[Shadow | None] = []
        self.labelled: dict[str, str] = {}  # alert id -> the last label seen (take_labels)
        self.label_wait_seconds = settings.label_wait_seconds
        self._route_names = {r.name: i for i, r in enumerate(routes)}
        # the daemon's own metrics (with one model also its pipeline's), and its no_model dead letters
        sources = [(metrics.registry, {}, lambda name: True)] if self.single else \
            [(metrics.registry, {}, lambda name: name in DAEMON_FAMILIES or name in ("vigil_dead_letters",
                                                                                    "vigil_alert_labels"))]
        for route in routes:
            try:
                model = load_model_or_registry(route.model)
            except ArtifactError as e:
                if self.single:
                    raise
                raise ArtifactError(f"route {route.name}: {e}") from None
            if self.single:
                route_metrics = metrics
            else:
                route_registry = CollectorRegistry()
                route_metrics = ServiceMetrics(route_registry)
                sources.append((route_registry, {"model": route.name}, lambda name: name not in DAEMON_FAMILIES))
            # alert_k / alert_n unset: the model's persistence rule, which follows a hot-reloaded model
            pipeline = Pipeline(model, route_metrics, settings.alert_policy(model.persistence), settings.max_assets,
                                settings.idle_seconds, settings.max_message_bytes, settings.storm_policy(),
                                self.topics, "" if self.single else route.name)
            self.pipelines.append(pipeline)
            shadow = None
            if is_registry(route.model):
                watcher = ModelWatcher(Path(route.model), current_version(route.model), settings.reload_seconds)
                self.reloads.append(HotReload(watcher, pipeline, route_metrics,
                                              "" if self.single else f"route {route.name}: "))
                shadow = Shadow(route.model, pipeline.name, settings, sources,
                                {} if self.single else {"model": route.name})
            self.shadows.append(shadow)
        registry.register(Merged(sources))

    def submit(self, records: Sequence[Record], replay_until: dict[tuple[str, int], int] | None = None,
               now_ms: int | None = None, labels: Sequence[Record] = ()) -> FleetBatch:
        """Decode the records and start scoring them, each with its route's model (Pipeline.submit),
        and with its shadow's, if it has one. labels: records of the labels topic (take_labels)."""
        replay_until = replay_until or {}
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if labels:
            groups = None
            route = self._routes_of(records) if not self.single else [0] * len(records)
        elif self.single:
            groups = [(0, records)]
        else:
            route = self._routes_of(records)
            first = route[0] if route else None
            if first is not None and route.count(first) == len(route):  # one route serves the whole batch
                groups = [(first, records)]
            else:
                groups = None
        if groups is not None:
            i = groups[0][0]
            shared = self._decode_shared(groups, now_ms)
            submitted = self.pipelines[i].submit(records, replay_until, now_ms, _copy(shared.get(i)))
            batch = FleetBatch([(self.pipelines[i], submitted)], submitted.result)
        else:
            result = BatchResult()
            result.offsets, result.commits = batch_offsets({(r.topic, r.partition): r for r in [*records, *labels]})
            self.take_labels(labels, replay_until, result)
            split: list[list[Record]] = [[] for _ in self.pipelines]
            unrouted = 0
            for r, i in zip(records, route):
                if i is not None:
                    split[i].append(r)
                elif r.offset >= replay_until.get((r.topic, r.partition), -1):  # re-read history: refused before
                    result.dead_letters.append(DeadLetter(r, NO_MODEL, f"asset {asset_of(r)!r} matches no route "
                                                                        f"({', '.join(self._route_names)})"))
                    unrouted += 1
            if unrouted:
                self.metrics.dead_letters.labels(NO_MODEL).inc(unrouted)
            groups = [(i, rs) for i, rs in enumerate(split) if rs]
            shared = self._decode_shared(groups, now_ms)
            batch = FleetBatch([(self.pipelines[i], self.pipelines[i].submit(rs, replay_until, now_ms,
                                                                             _copy(shared.get(i))))
                                for i, rs in groups], result)
        for i, rs in groups:
            shadow = self._shadow(i)
            if shadow is not None:
                batch.shadows.append((shadow, shadow.submit(rs, replay_until, now_ms, shared.get(i))))
        return batch

    def _shadow(self, i: int) -> Pipeline | None:
        """Route i's shadow pipeline, while it has a shadow."""
        shadow = self.shadows[i]
        return shadow.pipeline if shadow is not None else None

    def _shadow_pipelines(self) -> list[Pipeline]:
        """The shadow pipelines running now."""
        return [s.pipeline for s in self.shadows if s is not None and s.pipeline is not None]

    def _decode_shared(self, groups: list[tuple[int, Sequence[Record]]], now_ms: int) -> dict[int, Decoded]:
        """Each group's records decoded once, for the routes whose shadow reads them alike
        (Pipeline.reads_like): the shadow takes the decode, its route a copy (_copy)."""
        shared = {}
        for i, rs in groups:
            shadow = self._shadow(i)
            if shadow is not None and self.pipelines[i].reads_like(shadow):
                shared[i] = self.pipelines[i].decode(rs, now_ms)
        return shared

    def take_labels(self, records: Sequence[Record], replay_until: dict, result: BatchResult) -> None:
        """Operators' labels (detector.labels): counted in vigil_alert_labels_total{label} of the
        alert's route (the daemon's own count when the route is not one of this daemon's) and
        remembered, so that the alert no longer counts as unlabelled; a record that is not a label
        is dead-lettered. Re-read history is only remembered."""
        for r in records:
            live = r.offset >= replay_until.get((r.topic, r.partition), -1)
            try:
                label = parse_label(r.value)
            except BadMessage as e:
                if live:
                    result.dead_letters.append(DeadLetter(r, e.reason, e.detail))
                    self.metrics.dead_letters.labels(e.reason).inc()
                continue
            if len(self.labelled) >= MAX_REMEMBERED:
                self.labelled.clear()
            self.labelled[label.alert_id] = label.label
            if live:
                i = 0 if self.single else self._route_names.get(label.model)
                (self.pipelines[i].metrics if i is not None else self.metrics).alert_labels.labels(label.label).inc()

    def _routes_of(self, records: Sequence[Record]) -> list[int | None]:
        """The route of each record (None: no route), remembered by record key: a dict lookup per
        record once its key has been seen (the daemon's time per reading is a few microseconds)."""
        known = self._by_key
        route = [known.get(r.key, -1) for r in records]
        if -1 in route:
            for j, (r, i) in enumerate(zip(records, route)):
                if i == -1:
                    asset = asset_of(r)
                    i = route[j] = self.router(asset) if asset is not None else 0  # not decodable: the
                    if r.key:                                                    # first route says why
                        if len(known) >= MAX_REMEMBERED:
                            known.clear()
                        known[r.key] = i
        return route

    def finish(self, batch: FleetBatch) -> BatchResult:
        """Every route's part of the batch finished (Pipeline.finish), as one BatchResult; of the
        shadows' parts, only their alert and storm events (to the shadow alerts topic)."""
        if len(batch.parts) == 1 and batch.parts[0][1].result is batch.result:  # the batch went to one route
            pipeline, submitted = batch.parts[0]
            result = pipeline.finish(submitted)
        else:
            result = batch.result
            own = [dead_letter_message(self.topics.dlq, dl) for dl in result.dead_letters]
            for pipeline, submitted in batch.parts:
                part = pipeline.finish(submitted)
                result.alerts += part.alerts
                result.storms += part.storms
                result.dead_letters += part.dead_letters
                result.scores += part.scores
                result.scored += part.scored
                result.messages += part.messages
            result.messages += own
        for pipeline, submitted in batch.shadows:
            topic = pipeline.topics.alerts
            result.messages += [m for m in pipeline.finish(submitted).messages if m[0] == topic]
        return result

    def expire_idle(self) -> None:
        """Forget idle assets (Pipeline.expire_idle); count each route's open alerts older than
        label_wait_seconds that no label has reached (vigil_alerts_unlabelled)."""
        for pipeline in self.pipelines + self._shadow_pipelines():
            pipeline.expire_idle()
        before = (time.time() - self.label_wait_seconds) * 1000
        for pipeline in self.pipelines:
            pipeline.metrics.alerts_unlabelled.set(sum(1 for alert_id, opened in pipeline.alerts.open_since()
                                                       if opened < before and alert_id not in self.labelled))

    def take_up(self, open_alerts: dict[str, dict], storms: dict[str, dict]) -> None:
        """A previous daemon's open alerts (each to the route of its asset) and storms (by scope)."""
        for pipeline, alerts in zip(self.pipelines, self._by_route(open_alerts)):
            pipeline.take_up(alerts, storms)

    @property
    def shadowing(self) -> bool:
        return bool(self._shadow_pipelines())

    def take_up_shadows(self, open_alerts: dict[str, dict], storms: dict[str, dict]) -> None:
        """What a previous daemon's shadows left open on the shadow alerts topic: each shadow takes
        up the alerts its own model version opened (those of an earlier shadow are not its own),
        so that a restart does not open them again and count against the challenger."""
        for i, alerts in enumerate(self._by_route(open_alerts)):
            shadow = self._shadow(i)
            if shadow is not None:
                version = shadow.model.version
                shadow.take_up({a: e for a, e in alerts.items() if e.get("model_version") == version}, storms)

    def _by_route(self, open_alerts: dict[str, dict]) -> list[dict[str, dict]]:
        """open_alerts (asset -> event) split by the routes their assets go to."""
        if self.single:
            return [open_alerts]
        mine: list[dict[str, dict]] = [{} for _ in self.pipelines]
        for asset, event in open_alerts.items():
            i = self.router(asset)
            if i is not None:
                mine[i][asset] = event
        return mine

    def check_reload(self, before_swap: Callable[[], object] = lambda: None) -> bool:
        """Serve each route's newly promoted model (HotReload.check) and follow its shadow (Shadow.check);
        True when any changed."""
        swapped = False
        for reload in self.reloads:
            swapped = reload.check(before_swap) or swapped
        for shadow in self.shadows:
            if shadow is not None:
                swapped = shadow.check(before_swap) or swapped
        return swapped

    def describe(self) -> str:
        """What serves which assets, for the start-up line."""
        if self.single:
            return self.pipelines[0].describe()
        lines = []
        for route, pipeline in zip(self.router.routes, self.pipelines):
            serves = "every other asset" if route.matches_all else \
                ", ".join(route.assets + ((f"the assets in {route.assets_file}",) if route.assets_file else ()))
            lines.append(f"route {route.name} ({serves}): {pipeline.describe()} from {route.model}")
        return f"{len(lines)} routes; " + "; ".join(lines)


def _copy(decoded: Decoded | None) -> Decoded | None:
    """A decode another pipeline can change: Pipeline.submit may move late readings' times (it
    changes nothing else of it)."""
    if decoded is None:
        return None
    return dataclasses.replace(decoded, times=decoded.times.copy())
