"""Hot reload: the daemon follows a registry's `current` version without stopping."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from detector.artifact import ArtifactError, TrainedModel, describe_change, load
from detector.metrics import ServiceMetrics
from detector.pipeline import Pipeline
from detector.registry import current_version, load_current, shadow_version

log = logging.getLogger("vigil.serve")


class ModelWatcher:
    """Watches a registry's `current` file (or its `shadow` file: shadow=True); returns a
    verified new model when it changes."""

    def __init__(self, registry: Path, version: str | None, interval: float, shadow: bool = False,
                 at_once: bool = False):
        """version: the one serving (None: none); at_once: the first poll looks at the file at once."""
        self.registry, self.interval, self.shadow = registry, interval, shadow
        self.seen = version
        self._last_error: str | None = None
        self._next = time.monotonic() + (0.0 if at_once else interval)

    def poll(self) -> tuple[str | None, TrainedModel | None, str | None]:
        """(version, model or None, error or None) when the file changed; ('', None, None)
        otherwise. A shadow file that no longer names a version: (None, None, None)."""
        if time.monotonic() < self._next:
            return "", None, None
        self._next = time.monotonic() + self.interval
        try:
            name = shadow_version(self.registry) if self.shadow else current_version(self.registry)
        except ArtifactError as e:  # reported once, not at every check
            if str(e) == self._last_error:
                return "", None, None
            self._last_error = str(e)
            return "", None, str(e)
        self._last_error = None
        if name == self.seen:
            return "", None, None
        self.seen = name  # a refused version is not retried until the file changes again
        if name is None:
            return None, None, None
        try:
            return name, load(self.registry / name) if self.shadow else load_current(self.registry), None
        except ArtifactError as e:
            return name, None, str(e)


class HotReload:
    """Swaps a registry's newly promoted model into the pipeline: what changes is logged
    (describe_change), vigil_model_reloads_total{result} counts ok and refused, and a model
    that cannot be loaded, verified or compiled leaves the old one serving."""

    def __init__(self, watcher: ModelWatcher, pipeline: Pipeline, metrics: ServiceMetrics, label: str = ""):
        """label: what the log lines start with (e.g. "route pumps: ")."""
        self.watcher, self.pipeline, self.metrics, self.label = watcher, pipeline, metrics, label

    def check(self, before_swap: Callable[[], object] = lambda: None) -> bool:
        """Look at `current` (at most every reload interval); True when a new model now serves.
        before_swap runs just before the swap (the service finishes its batch in flight)."""
        version, model, error = self.watcher.poll()
        pipeline = self.pipeline
        if model is not None:
            for level, message in describe_change(pipeline.model, model):
                (log.warning if level == "warning" else log.info)("%shot reload: %s", self.label, message)
            before_swap()
            try:
                pipeline.swap_model(model)
            except Exception as e:  # e.g. compiling the new model failed: keep serving the old one
                self.metrics.model_reloads.labels("refused").inc()
                log.error("%shot reload refused for version %s: %s; still serving %s", self.label, version, e,
                          pipeline.model.version)
                return False
            self.metrics.model_reloads.labels("ok").inc()
            log.info("%shot reload: now serving model %s (threshold %.5g, alert rule %s, windows of %s)", self.label,
                     model.version, model.threshold.value, pipeline.alert_rule, pipeline.window_span)
            return True
        if error is not None:
            self.metrics.model_reloads.labels("refused").inc()
            log.error("%shot reload refused%s: %s; still serving %s", self.label,
                      f" for version {version}" if version else "", error, pipeline.model.version)
        return False
