"""Model artifacts: a directory with config.json, params.msgpack and a SHA-256 manifest.

    MODEL_DIR/
      config.json      schema version, sensors, window, architecture, scaler, threshold, ...
      params.msgpack   flax msgpack serialisation of the VAE parameters (never pickle)
      SHA256SUMS       "<sha256>  <file>" for both files above; checked on every load

Saving writes into a hidden temporary sibling `.tmp-<name>.<random>` and renames it into
place, so a reader never sees a half-written artifact; a failed save (disk full, no
permission) removes the temporary directory and raises ArtifactError naming the cause.
A directory holds only what its manifest lists: an unlisted file is refused too.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import platform
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import jax
import numpy as np
from flax import nnx, serialization

from detector.grid import TimeGrid
from detector.model import ModelConfig, WindowVAE, build_vae
from detector.offcondition import SETTLE_SECONDS, OffCondition
from detector.preprocessing import Scaler
from detector.scoring import ScoreRule, Scorer
from detector.threshold import Persistence, Threshold

SCHEMA_VERSION = 2  # 2: the scoring rule (ScoreRule); schema 1 models score as they always did
CONFIG_FILE, PARAMS_FILE, MANIFEST_FILE = "config.json", "params.msgpack", "SHA256SUMS"
TMP_PREFIX = ".tmp-"            # save()'s temporary directories: .tmp-<name>.<random>
STALE_TMP_SECONDS = 3600.0      # a temporary directory this old is left over from a crash
_TMP_NAME = re.compile(r"\.tmp-.+\.[a-z0-9_]{8}")
_OS_REASONS = {errno.ENOSPC: "disk full (no space left on device)", errno.EDQUOT: "disk quota exceeded",
               errno.EFBIG: "file too large (a file-size limit, or a full disk)", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
               errno.ENOTDIR: "not a directory (a parent of it is a file)", errno.EEXIST: "exists and is not a directory"}


class ArtifactError(ValueError):
    """A model directory that cannot be used (or written); the message says what is wrong."""


def os_reason(e: OSError, path: str | os.PathLike | None = None) -> str:
    """'disk full (no space left on device) writing PATH': what went wrong, for a one-line error.
    path: what was being written (default: the error's file name, if any)."""
    reason = _OS_REASONS.get(e.errno) or e.strerror or str(e)
    where = path or e.filename
    return f"{reason} writing {where}" if path else f"{reason}: {where}" if where else reason


@dataclass
class TrainedModel:
    """Everything needed to score: the VAE, its preprocessing and its alert rule."""

    sensors: tuple[str, ...]
    config: ModelConfig
    scaler: Scaler
    vae: WindowVAE
    threshold: Threshold
    persistence: Persistence = field(default_factory=Persistence)
    scoring: ScoreRule = field(default_factory=ScoreRule)
    interval_seconds: float | None = None  # the sampling interval of the training data (None: unknown)
    version: str = ""
    metadata: dict = field(default_factory=dict)  # training summary, library versions, creation time
    off_condition: str | None = None  # when the machine counts as switched off (detector.offcondition)
    off_settle_seconds: float = SETTLE_SECONDS  # ... and how long it settles after a switch-on

    def __post_init__(self):
        self.off = None if self.off_condition is None else \
            OffCondition.parse(self.off_condition, self.sensors, self.off_settle_seconds)
        if self.scoring.spread is not None and len(self.scoring.spread) != len(self.sensors):
            raise ValueError(f"the scoring rule has {len(self.scoring.spread)} sensor scales for "
                             f"{len(self.sensors)} sensors")
        if len(self.sensors) != self.vae.sensors or len(self.scaler.center) != self.vae.sensors:
            raise ValueError(
                f"{len(self.sensors)} sensor names, {len(self.scaler.center)} scaler entries and a VAE "
                f"for {self.vae.sensors} sensors do not match"
            )

    def scorer(self, **options) -> Scorer:
        return Scorer(self.vae, self.scaler, self.scoring, **options)

    @property
    def grid(self) -> TimeGrid:
        """How readings become windows (detector.grid): W intervals of interval_seconds."""
        return TimeGrid.of(self.config.window, self.interval_seconds)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _params_bytes(vae: WindowVAE) -> bytes:
    state = nnx.state(vae, nnx.Param)
    return serialization.msgpack_serialize(jax.tree.map(np.asarray, nnx.to_pure_dict(state)))


def new_version(model: TrainedModel) -> str:
    """A new version name: UTC creation time and the first 8 hex digits of the parameters' SHA-256."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + hashlib.sha256(_params_bytes(model.vae)).hexdigest()[:8]


def save(model: TrainedModel, directory: str | os.PathLike, extra: dict[str, bytes] | None = None) -> Path:
    """Write the artifact to `directory` (which must not exist yet). Returns its path.

    extra: more files to include (reports), listed in the manifest too. Fills in
    model.version (creation time plus a digest of the parameters) when empty.
    """
    extra = dict(extra or {})
    if set(extra) & {CONFIG_FILE, PARAMS_FILE, MANIFEST_FILE} or any("/" in n or n.startswith(".") for n in extra):
        raise ValueError(f"invalid extra file names: {sorted(extra)}")
    directory = Path(directory)
    if directory.exists():
        raise ArtifactError(f"{directory}: already exists; choose a new directory for the model")
    params = _params_bytes(model.vae)
    created = datetime.now(timezone.utc)
    if not model.version:
        model.version = new_version(model)
    config = {
        "schema_version": SCHEMA_VERSION,
        "version": model.version,
        "created_at": created.isoformat(timespec="seconds"),
        "sensors": list(model.sensors),
        "window": model.config.window,
        "model": model.config.to_dict(),
        "scaler": model.scaler.to_dict(),
        "scoring": model.scoring.to_dict(),
        "threshold": model.threshold.to_dict(),
        "persistence": model.persistence.to_dict(),
        "interval_seconds": model.interval_seconds,
        "off_condition": model.off_condition,
        "off_settle_seconds": model.off_settle_seconds,
        "libraries": library_versions(),
    } | {k: v for k, v in model.metadata.items() if k not in ("libraries", "created_at")}
    tmp = writing = None
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(directory.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{directory.name}.", dir=directory.parent))
        contents = {CONFIG_FILE: (json.dumps(config, indent=2, sort_keys=False) + "\n").encode(),
                    PARAMS_FILE: params, **extra}
        contents[MANIFEST_FILE] = "".join(f"{hashlib.sha256(c).hexdigest()}  {n}\n"
                                          for n, c in contents.items()).encode()
        for writing, content in contents.items():
            with open(tmp / writing, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        writing = None
        os.chmod(tmp, 0o755)
        os.rename(tmp, directory)  # fails if directory appeared meanwhile (non-empty)
        tmp = None
        fsync_directory(directory.parent)
    except OSError as e:
        if directory.exists() and tmp is not None:
            raise ArtifactError(f"{directory}: already exists; choose a new directory for the model") from None
        raise ArtifactError(f"{directory}: cannot save the model: {os_reason(e, writing)}; nothing was saved") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def check_writable(directory: str | os.PathLike) -> None:
    """Create directory (and parents) if needed and check that a model can be written into it;
    raises ArtifactError naming the cause. Call it before a long training run."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}check.", dir=directory))
    except OSError as e:
        raise ArtifactError(f"{directory}: cannot write models here: {os_reason(e)}") from None


def temporaries(directory: str | os.PathLike) -> list[Path]:
    """save()'s temporary directories in directory: being written now, or left by a crash."""
    try:
        return sorted(p for p in Path(directory).iterdir() if _TMP_NAME.fullmatch(p.name) and p.is_dir())
    except OSError:
        return []


def remove_stale_temporaries(directory: str | os.PathLike, older_than: float = STALE_TMP_SECONDS) -> list[Path]:
    """Remove temporary directories older than older_than seconds (left over from a crash
    mid-save; a save in progress takes seconds). Returns what was removed."""
    now, removed = time.time(), []
    for path in temporaries(directory):
        try:
            if now - path.stat().st_mtime > older_than:
                shutil.rmtree(path)
                removed.append(path)
        except OSError:
            pass  # another process removed it, or it cannot be: harmless, it is never loaded
    return removed


def fsync_directory(directory: Path) -> None:
    """Make a rename in directory durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def verify(directory: str | os.PathLike) -> None:
    """Check the manifest: config and params listed, every listed file present with its
    recorded SHA-256, and no unlisted file beside them (hidden files aside)."""
    directory = Path(directory)
    try:
        _verify(directory)
    except OSError as e:
        raise ArtifactError(f"{directory}: cannot be read: {os_reason(e)}") from None


def _verify(directory: Path) -> None:
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: not a model directory (it does not exist or is not a directory)")
    manifest = directory / MANIFEST_FILE
    if not manifest.is_file():
        hint = ("; it looks like a model registry: give one of its version directories"
                if os.path.lexists(directory / "current") else "")
        raise ArtifactError(f"{directory}: no {MANIFEST_FILE} manifest; not a complete Vigil model{hint}")
    expected = {}
    for number, line in enumerate(manifest.read_text(errors="replace").splitlines(), 1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or "/" in name or "\0" in name or name.startswith("."):
            raise ArtifactError(f"{manifest}, line {number}: malformed manifest entry {line[:200]!r}")
        expected[name] = digest
    for name in (CONFIG_FILE, PARAMS_FILE):
        if name not in expected:
            raise ArtifactError(f"{manifest}: does not list {name}")
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (listed in {MANIFEST_FILE})")
        if _sha256(path) != digest:
            raise ArtifactError(f"{path}: SHA-256 does not match {MANIFEST_FILE}; the file is corrupted or was modified")
    unlisted = sorted(p.name for p in directory.iterdir()
                      if p.name not in expected and p.name != MANIFEST_FILE and not p.name.startswith("."))
    if unlisted:
        raise ArtifactError(f"{directory / unlisted[0]}: not listed in {MANIFEST_FILE}; a model directory holds "
                            "only the files its manifest lists (remove it, or save the model again)")


def _require(config: dict, key: str, path: Path):
    if key not in config:
        raise ArtifactError(f"{path}: missing key {key!r}")
    return config[key]


def load(directory: str | os.PathLike) -> TrainedModel:
    """Load and verify a model artifact; raises ArtifactError saying what is wrong."""
    directory = Path(directory)
    verify(directory)
    try:
        return _load(directory)
    except OSError as e:
        raise ArtifactError(f"{directory}: cannot be read: {os_reason(e)}") from None


def _load(directory: Path) -> TrainedModel:
    path = directory / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: not a model description (a JSON object)")
    schema = _require(config, "schema_version", path)
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: schema version {schema!r} is newer than this Vigil understands ({SCHEMA_VERSION}); upgrade Vigil"
        )
    try:
        sensors = _require(config, "sensors", path)
        if not isinstance(sensors, list) or not sensors or not all(isinstance(s, str) and s for s in sensors):
            raise ArtifactError(f"{path}: 'sensors' must be a non-empty list of sensor names")
        twice = sorted({s for s in sensors if sensors.count(s) > 1})
        if twice:
            raise ArtifactError(f"{path}: sensors listed twice: {twice}")
        sensors = tuple(sensors)
        model_config = ModelConfig.from_dict(_require(config, "model", path))
        if config.get("window", model_config.window) != model_config.window:
            raise ArtifactError(f"{path}: window {config['window']!r} does not match the model's window "
                                f"{model_config.window}")
        scaler = Scaler.from_dict(_require(config, "scaler", path))
        if not (np.isfinite(scaler.center).all() and np.isfinite(scaler.scale).all() and (scaler.scale > 0).all()):
            raise ArtifactError(f"{path}: scaler has a non-finite center or a scale that is not > 0")
        threshold = Threshold.from_dict(_require(config, "threshold", path))
        if not (math.isfinite(threshold.value) and threshold.value > 0):
            raise ArtifactError(f"{path}: threshold {threshold.value} is not a finite number > 0")
        persistence = Persistence(**_require(config, "persistence", path))
        scoring = ScoreRule.from_dict(_require(config, "scoring", path))
        interval = config.get("interval_seconds")  # models saved before it was recorded: unknown
        if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float))
                                     or not 0 < interval < math.inf):
            raise ArtifactError(f"{path}: interval_seconds {interval!r} is not a number of seconds > 0")
        off_condition = config.get("off_condition")  # models saved before it existed: none
        if off_condition is not None and not isinstance(off_condition, str):
            raise ArtifactError(f"{path}: off_condition {off_condition!r} is not a text")
        settle = config.get("off_settle_seconds", SETTLE_SECONDS)
        if isinstance(settle, bool) or not isinstance(settle, (int, float)):
            raise ArtifactError(f"{path}: off_settle_seconds {settle!r} is not a number of seconds")
        abstract = nnx.eval_shape(lambda: build_vae(model_config, len(sensors), rngs=nnx.Rngs(0)))
    except (TypeError, KeyError, ValueError) as e:
        if isinstance(e, ArtifactError):
            raise
        raise ArtifactError(f"{path}: invalid model description: {e}") from None
    graphdef, state = nnx.split(abstract)
    params_path = directory / PARAMS_FILE
    try:
        restored = serialization.msgpack_restore(params_path.read_bytes())
    except Exception as e:  # msgpack raises several types on malformed input
        raise ArtifactError(f"{params_path}: cannot be decoded: {e}") from None
    expected = jax.tree.map(lambda a: tuple(a.shape), nnx.to_pure_dict(state))
    got = jax.tree.map(lambda a: tuple(np.shape(a)), restored)
    if expected != got:
        raise ArtifactError(f"{params_path}: parameters do not match the architecture in {CONFIG_FILE}")
    try:
        restored = jax.tree.map(lambda a: np.asarray(a, np.float32), restored)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{params_path}: parameters are not numbers: {e}") from None
    if not all(np.isfinite(a).all() for a in jax.tree.leaves(restored)):
        raise ArtifactError(f"{params_path}: parameters contain NaN or infinity")
    nnx.replace_by_pure_dict(state, restored)
    vae = nnx.merge(graphdef, state)
    known = {"schema_version", "version", "sensors", "window", "model", "scaler", "scoring", "threshold", "persistence",
             "interval_seconds", "off_condition", "off_settle_seconds"}
    metadata = {k: v for k, v in config.items() if k not in known}
    try:
        return TrainedModel(sensors, model_config, scaler, vae, threshold, persistence, scoring,
                            None if interval is None else float(interval), str(config.get("version", "")), metadata,
                            off_condition, float(settle))
    except ValueError as e:
        raise ArtifactError(f"{path}: {e}") from None


def describe_change(serving: TrainedModel, new: TrainedModel) -> list[tuple[str, str]]:
    """What replacing the serving model by new changes for the daemon, as (level, message)
    pairs, level "info" or "warning". Other sensors or another window are allowed (every
    asset's window starts afresh); a new model sharing no sensor with the serving one
    probably belongs to other equipment, and gets a warning."""
    notes = []
    if new.sensors != serving.sensors:
        shared = set(new.sensors) & set(serving.sensors)
        if not shared:
            notes.append(("warning", f"model {new.version} shares no sensor with {serving.version} "
                                     f"({', '.join(new.sensors)} vs {', '.join(serving.sensors)}): readings of "
                                     "the old sensors are ignored and the new ones seen as missing; is it the right "
                                     "model?"))
        else:
            dropped, added = sorted(set(serving.sensors) - shared), sorted(set(new.sensors) - shared)
            notes.append(("info", f"model {new.version} uses other sensors than {serving.version}"
                                  + (f"; no longer used: {', '.join(dropped)}" if dropped else "")
                                  + (f"; new: {', '.join(added)}" if added else "")))
    if new.config.window != serving.config.window:
        notes.append(("info", f"model {new.version} has window {new.config.window} (was {serving.config.window})"))
    old, now = serving.interval_seconds, new.interval_seconds
    if old and now and abs(now / old - 1) > 0.1:
        from detector.sampling import duration

        notes.append(("warning", f"model {new.version} was trained on readings {duration(now)} apart, "
                                 f"{serving.version} on {duration(old)}: do the assets still send at that rate?"))
    if new.off_condition != serving.off_condition:
        notes.append(("info", f"model {new.version} counts an asset as switched off "
                              + (f"when {new.off_condition}" if new.off_condition else "never")
                              + f" ({serving.version}: " + (serving.off_condition or "never") + ")"))
    if notes and (new.sensors != serving.sensors or new.config.window != serving.config.window or
                  new.grid != serving.grid):
        notes.append(("info", "every asset's window starts afresh: no scores until it is full again"))
    return notes
