"""Model registry: a directory of model versions and a `current` file naming the active one.

    REGISTRY/
      20261123T190000Z-1a2b3c4d/   a model artifact (see detector.artifact)
      20261124T020000Z-5e6f7a8b/
      current                      one line: the active version's directory name
      history                      one line per promotion: "<UTC time> <version>"

`current` is replaced atomically (write a temporary file, then rename), so a reader sees
the old or the new name, never half of one. A version is promoted only after it loads and
verifies; `rollback` promotes the version that was current before.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from detector.artifact import ArtifactError, TrainedModel, load

CURRENT, HISTORY = "current", "history"


def is_registry(path: str | os.PathLike) -> bool:
    return (Path(path) / CURRENT).is_file()


def current_version(registry: str | os.PathLike) -> str:
    path = Path(registry) / CURRENT
    try:
        name = path.read_text().strip()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; this registry has no current model") from None
    if not name or "/" in name or name.startswith("."):
        raise ArtifactError(f"{path}: does not name a version directory: {name!r}")
    return name


def load_current(registry: str | os.PathLike) -> TrainedModel:
    name = current_version(registry)
    directory = Path(registry) / name
    if not directory.is_dir():
        raise ArtifactError(f"{Path(registry) / CURRENT} names version {name!r}, but {directory} does not exist")
    return load(directory)


def set_current(registry: str | os.PathLike, version: str) -> None:
    """Point `current` at version (which must exist), atomically."""
    registry = Path(registry)
    if not (registry / version).is_dir():
        raise ArtifactError(f"{registry / version}: no such version")
    fd, tmp = tempfile.mkstemp(prefix=".current.", dir=registry)
    with os.fdopen(fd, "w") as f:
        f.write(version + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, registry / CURRENT)


def load_model_or_registry(path: str | os.PathLike) -> TrainedModel:
    """A model directory, or the current model of a registry."""
    return load_current(path) if is_registry(path) else load(path)


def versions(registry: str | os.PathLike) -> list[str]:
    """Version directories (complete artifacts only), oldest first by name."""
    registry = Path(registry)
    if not registry.is_dir():
        raise ArtifactError(f"{registry}: no such registry directory")
    return sorted(p.name for p in registry.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file())


def promote(registry: str | os.PathLike, version: str, _action: str = "promote") -> TrainedModel:
    """Verify a version, make it current and record it in the history; returns the model."""
    registry = Path(registry)
    model = load(registry / version)  # refuses a missing, corrupted or unreadable version
    set_current(registry, version)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(registry / HISTORY, "a") as f:
        f.write(f"{stamp} {_action} {version}\n")
    return model


def promotion_stack(registry: str | os.PathLike) -> list[str]:
    """Versions promoted and not rolled back, oldest first (the last one is current)."""
    path = Path(registry) / HISTORY
    stack: list[str] = []
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "promote":
                stack.append(parts[2])
            elif len(parts) == 3 and parts[1] == "rollback" and stack:
                stack.pop()
    return stack


def rollback(registry: str | os.PathLike) -> str:
    """Make the version promoted before the current one current again; returns it."""
    stack = promotion_stack(registry)
    if len(stack) < 2:
        raise ArtifactError(f"{Path(registry) / HISTORY}: no earlier promoted version to roll back to")
    promote(registry, stack[-2], _action="rollback")
    return stack[-2]
