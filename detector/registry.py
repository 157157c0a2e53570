"""Model registry: a directory of model versions and a `current` file naming the active one.

    REGISTRY/
      20261123T190000Z-1a2b3c4d/   a model artifact (see detector.artifact)
      20261124T020000Z-5e6f7a8b/
      current                      one line: the active version's directory name

`current` is replaced atomically (write a temporary file, then rename), so a reader sees
the old or the new name, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from detector.artifact import ArtifactError, TrainedModel, load

CURRENT = "current"


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
