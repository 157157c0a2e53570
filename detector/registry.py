"""Model registry: a directory of model versions and a `current` file naming the active one.

    REGISTRY/
      20261123T190000Z-1a2b3c4d/   a model artifact (see detector.artifact)
      20261124T020000Z-5e6f7a8b/
      current                      one line: the active version's directory name
      shadow                       (optional) one line: a version the daemon also scores, silently
      history                      one line per change: "<UTC time> promote|rollback|shadow|unshadow <version>"

A shadow version is scored by the daemon on the live stream beside `current` without raising
alerts (its would-be alerts go to a shadow topic): a challenger watched before it pages anyone.
Promoting the shadow version ends its shadowing.

`current` and `history` are replaced atomically (write a temporary file, then rename), so a
reader sees the old or the new content, never half of it, and a promotion that fails (disk
full) changes neither. A version is promoted only after it loads and verifies; `rollback`
promotes the version that was current before. `current` must be a regular file naming a
version directory of this registry; anything else (missing, empty, garbage, a symlink or a
directory, a name with "/" or a leading ".") is refused with an ArtifactError saying so.
Hidden entries (save's `.tmp-*` directories, `.current.*` temporary files) are never versions.
"""

from __future__ import annotations

import os
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from detector.artifact import (ArtifactError, TrainedModel, fsync_directory, load, os_reason, temporaries)

CURRENT, HISTORY, SHADOW = "current", "history", "shadow"
MAX_NAME = 255


def check_version_name(name: str, source: str = "version") -> str:
    """A version is a directory directly inside the registry: refuse anything else."""
    if (not name or len(name) > MAX_NAME or "/" in name or name.startswith(".")
            or any(c.isspace() or not c.isprintable() for c in name)):
        raise ArtifactError(f"{source}: {name[:80]!r} is not a version name (a directory name inside the registry, "
                            "not starting with '.')")
    return name


def is_registry(path: str | os.PathLike) -> bool:
    """A directory with a `current` entry (even a broken one), or with versions but no
    manifest of its own (a registry where nothing was promoted yet)."""
    path = Path(path)
    if os.path.lexists(path / CURRENT):
        return True
    try:
        return path.is_dir() and not (path / "SHA256SUMS").exists() and bool(_version_dirs(path))
    except OSError:
        return False


def current_version(registry: str | os.PathLike) -> str:
    path = Path(registry) / CURRENT
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            raise ArtifactError(f"{path}: a symlink (to {os.readlink(path)}); `current` must be a regular file "
                                "naming a version (vigil models promote VERSION writes it)")
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(f"{path}: not a regular file; `current` must be a file naming a version "
                                "(vigil models promote VERSION writes it)")
        with open(path, "rb") as f:
            data = f.read(MAX_NAME + 2)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; this registry has no current model "
                            "(vigil models promote VERSION)") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot be read: {os_reason(e)}") from None
    try:
        name = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ArtifactError(f"{path}: not text; it should hold one version name") from None
    if not name:
        raise ArtifactError(f"{path}: empty; it should hold one version name (vigil models promote VERSION)")
    return check_version_name(name, str(path))


def load_current(registry: str | os.PathLike) -> TrainedModel:
    name = current_version(registry)
    directory = Path(registry) / name
    if not directory.is_dir():
        raise ArtifactError(f"{Path(registry) / CURRENT} names version {name!r}, but {directory} does not exist")
    return load(directory)


def _stage(registry: Path, name: str, content: bytes) -> Path:
    """Write content to a new temporary file in registry (fsynced, mode 644: the daemon may
    run as another user); the caller renames it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=registry)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _replace(registry: Path, files: dict[str, bytes], what: str) -> None:
    """Replace several small files of the registry; nothing changes unless all were written."""
    for name in files:
        if (registry / name).is_dir() and not (registry / name).is_symlink():
            raise ArtifactError(f"{registry / name}: a directory, not a file; remove it, then promote again")
    staged: list[tuple[Path, Path]] = []
    try:
        for name, content in files.items():
            staged.append((_stage(registry, name, content), registry / name))
        for tmp, dest in staged:
            os.replace(tmp, dest)
        fsync_directory(registry)
    except OSError as e:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise ArtifactError(f"{registry}: cannot {what}: {os_reason(e)}; {CURRENT} is unchanged") from None


def set_current(registry: str | os.PathLike, version: str) -> None:
    """Point `current` at version (which must exist), atomically."""
    registry = Path(registry)
    check_version_name(version)
    if not (registry / version).is_dir():
        raise ArtifactError(f"{registry / version}: no such version")
    _replace(registry, {CURRENT: f"{version}\n".encode()}, f"make {version} current")


def load_model_or_registry(path: str | os.PathLike) -> TrainedModel:
    """A model directory, or the current model of a registry."""
    return load_current(path) if is_registry(path) else load(path)


def _version_dirs(registry: Path) -> list[str]:
    return [p.name for p in registry.iterdir()
            if not p.name.startswith(".") and p.is_dir() and (p / "config.json").is_file()]


def versions(registry: str | os.PathLike) -> list[str]:
    """Version directories (those with a config.json; hidden ones never), oldest first by name."""
    registry = Path(registry)
    if not registry.is_dir():
        raise ArtifactError(f"{registry}: no such registry directory")
    try:
        return sorted(_version_dirs(registry))
    except OSError as e:
        raise ArtifactError(f"{registry}: cannot be read: {os_reason(e)}") from None


def leftovers(registry: str | os.PathLike) -> list[Path]:
    """Temporary files and directories of a save or promotion in progress, or left by a crash
    (a crash mid-save leaves `.tmp-<version>.<random>`). Never loaded; safe to delete when no
    `vigil train` or `vigil retrain` is running; the next save into the registry removes those
    over an hour old."""
    registry = Path(registry)
    try:
        files = [p for p in registry.iterdir()
                 if p.name.startswith((f".{CURRENT}.", f".{HISTORY}.", f".{SHADOW}.")) and p.is_file()]
    except OSError:
        files = []
    return sorted(temporaries(registry) + files)


def _history_with(registry: Path, action: str, version: str) -> bytes:
    """The history file's content with one more line: now, action, version."""
    try:
        history = (registry / HISTORY).read_bytes()
    except FileNotFoundError:
        history = b""
    except OSError as e:
        raise ArtifactError(f"{registry / HISTORY}: cannot be read: {os_reason(e)}") from None
    if history and not history.endswith(b"\n"):
        history += b"\n"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return history + f"{stamp} {action} {version}\n".encode()


def promote(registry: str | os.PathLike, version: str, _action: str = "promote") -> TrainedModel:
    """Verify a version, make it current and record it in the history; returns the model.
    Promoting the shadow version ends its shadowing. Nothing changes when the version is
    refused or the files cannot be written."""
    registry = Path(registry)
    check_version_name(version)
    model = load(registry / version)  # refuses a missing, corrupted or unreadable version
    files = {CURRENT: f"{version}\n".encode(), HISTORY: _history_with(registry, _action, version)}
    if shadow_version(registry) == version:
        files[SHADOW] = b""
    _replace(registry, files, f"make {version} current")
    return model


def shadow_version(registry: str | os.PathLike) -> str | None:
    """The version the daemon scores silently beside `current`, or None (no `shadow` file, or an
    empty one); ArtifactError when the file is not a version name."""
    path = Path(registry) / SHADOW
    try:
        name = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: cannot be read: {os_reason(e) if isinstance(e, OSError) else 'not text'}"
                            ) from None
    return check_version_name(name, str(path)) if name else None


def set_shadow(registry: str | os.PathLike, version: str | None) -> TrainedModel | None:
    """Make a (verified) version the shadow, or end shadowing (None); recorded in the history.
    Returns the shadow model."""
    registry = Path(registry)
    if version is None:
        old = shadow_version(registry)
        if old is not None:
            _replace(registry, {SHADOW: b"", HISTORY: _history_with(registry, "unshadow", old)}, "end shadowing")
        return None
    check_version_name(version)
    model = load(registry / version)  # refuses a missing, corrupted or unreadable version
    if version == current_version(registry):
        raise ArtifactError(f"{version} is the current version; a shadow is another version scored beside it")
    _replace(registry, {SHADOW: f"{version}\n".encode(), HISTORY: _history_with(registry, "shadow", version)},
             f"make {version} the shadow")
    return model


def shadow_since(registry: str | os.PathLike) -> datetime | None:
    """When the current shadow version became the shadow (the history's last `shadow` line for it)."""
    version = shadow_version(registry)
    path = Path(registry) / HISTORY
    if version is None or not path.is_file():
        return None
    since = None
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1:] == ["shadow", version]:
            try:
                since = datetime.strptime(parts[0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            except ValueError:
                continue
    return since


def promotion_stack(registry: str | os.PathLike) -> list[str]:
    """Versions promoted and not rolled back, oldest first (the last one is current)."""
    path = Path(registry) / HISTORY
    stack: list[str] = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
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
