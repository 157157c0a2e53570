"""Shadow scoring: a registry's `shadow` version (detector.registry) scored on the live stream
beside its current model, silently.

The shadow is a second Pipeline fed the same records as the route's own. It keeps its own
windows and alert state; its alert and storm events go to the shadow alerts topic (default
`<alerts_topic>.shadow`), never to the alerts topic; its dead letters and scores are dropped
(the route's pipeline reports those). Its metrics are shown with the label role="shadow":
alert events, open alerts, readings scored, the score distribution and model info. After a
restart it takes up the alerts its model version left open on the shadow alerts topic (as the
route's pipeline does from the alerts topic), so that they are not opened, and counted, again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from detector.metrics import ServiceMetrics
from detector.pipeline import Pipeline, Topics
from detector.reload import ModelWatcher
from detector.settings import ServeSettings, shadow_topic_of

log = logging.getLogger("vigil.serve")
# what the endpoint shows of a shadow's metrics (role="shadow"); per-asset series are left
# out, so that nothing about a shadow can page (the alerting rules read those)
SHADOW_FAMILIES = frozenset({"vigil_alert_events", "vigil_alerts_open", "vigil_readings_scored",
                             "vigil_normalized_score", "vigil_model_info"})


class Shadow:
    """A route's shadow: follows the registry's `shadow` file (ModelWatcher, every reload
    interval) and keeps the shadow pipeline (None while there is no shadow)."""

    def __init__(self, registry: str, name: str, settings: ServeSettings, sources: list,
                 labels: dict[str, str]):
        """sources: the Merged collector's list, to which the shadow's metrics are added while it
        runs; labels: what they carry besides role="shadow" (the route's model label)."""
        self.name, self.settings = name, settings
        self.sources, self.labels = sources, {**labels, "role": "shadow"}
        self.topic = shadow_topic_of(settings.alerts_topic, settings.shadow_alerts_topic)
        self.pipeline: Pipeline | None = None
        self._source = None
        # a shadow named at start-up is scored from the first batch
        self.watcher = ModelWatcher(Path(registry), None, settings.reload_seconds, shadow=True, at_once=True)
        self.check()

    def check(self, before_swap: Callable[[], object] = lambda: None) -> bool:
        """Follow the `shadow` file (at most every reload interval); True when the shadow changed."""
        version, model, error = self.watcher.poll()
        where = f"route {self.name}: " if self.name else ""
        if error is not None:
            log.error("%sshadow%s refused: %s", where, f" version {version}" if version else "", error)
            return False
        if version == "":
            return False
        if version is None:
            before_swap()
            self._drop()
            log.info("%sshadow scoring ended", where)
            return True
        try:
            settings = self.settings
            registry = CollectorRegistry()
            pipeline = Pipeline(model, ServiceMetrics(registry), settings.alert_policy(model.persistence),
                                settings.max_assets, settings.idle_seconds, settings.max_message_bytes,
                                settings.storm_policy(), Topics(self.topic, "", ""), self.name)
        except Exception as e:  # a shadow that cannot be compiled or whose rule does not fit changes nothing else
            log.error("%sshadow version %s refused: %s", where, version, e)
            return False
        before_swap()
        self._drop()
        self.pipeline, self._source = pipeline, (registry, self.labels, SHADOW_FAMILIES.__contains__)
        self.sources.append(self._source)
        log.info("%sshadow scoring model %s (threshold %.5g, alert rule %s): its would-be alerts go to %s",
                 where, version, model.threshold.value, pipeline.alert_rule, self.topic)
        return True

    def _drop(self) -> None:
        if self._source is not None:
            self.sources.remove(self._source)
        self.pipeline, self._source = None, None
