"""Hot reload: the daemon follows a registry's `current` version without stopping."""

from __future__ import annotations

import time
from pathlib import Path

from detector.artifact import ArtifactError, TrainedModel
from detector.registry import current_version, load_current


class ModelWatcher:
    """Watches a registry's `current` file; returns a verified new model when it changes."""

    def __init__(self, registry: Path, version: str, interval: float):
        self.registry, self.interval = registry, interval
        self.seen = version
        self._last_error: str | None = None
        self._next = time.monotonic() + interval

    def poll(self) -> tuple[str, TrainedModel | None, str | None]:
        """(version, model or None, error or None) when `current` changed; ('', None, None) otherwise."""
        if time.monotonic() < self._next:
            return "", None, None
        self._next = time.monotonic() + self.interval
        try:
            name = current_version(self.registry)
        except ArtifactError as e:  # reported once, not at every check
            if str(e) == self._last_error:
                return "", None, None
            self._last_error = str(e)
            return "", None, str(e)
        self._last_error = None
        if name == self.seen:
            return "", None, None
        self.seen = name  # a refused version is not retried until `current` changes again
        try:
            return name, load_current(self.registry), None
        except ArtifactError as e:
            return name, None, str(e)
