"""Model artifacts: a directory with config.json, params.msgpack and a SHA-256 manifest.

    MODEL_DIR/
      config.json      schema version, sensors, window, architecture, scaler, threshold, ...
      params.msgpack   flax msgpack serialisation of the VAE parameters (never pickle)
      SHA256SUMS       "<sha256>  <file>" for both files above; checked on every load

Saving writes into a temporary sibling directory and renames it into place, so a reader
never sees a half-written artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import jax
import numpy as np
from flax import nnx, serialization

from detector.model import VAE, ModelConfig
from detector.preprocessing import Scaler
from detector.scoring import SCORE_WEIGHTINGS, Scorer
from detector.threshold import Persistence, Threshold

SCHEMA_VERSION = 1
CONFIG_FILE, PARAMS_FILE, MANIFEST_FILE = "config.json", "params.msgpack", "SHA256SUMS"


class ArtifactError(ValueError):
    """A model directory that cannot be used; the message says what is wrong."""


@dataclass
class TrainedModel:
    """Everything needed to score: the VAE, its preprocessing and its alert rule."""

    sensors: tuple[str, ...]
    config: ModelConfig
    scaler: Scaler
    vae: VAE
    threshold: Threshold
    persistence: Persistence = field(default_factory=Persistence)
    weighting: str = "precision"
    version: str = ""
    metadata: dict = field(default_factory=dict)  # training summary, library versions, creation time

    def __post_init__(self):
        if self.weighting not in SCORE_WEIGHTINGS:
            raise ValueError(f"unsupported score weighting: {self.weighting!r}")
        if len(self.sensors) != self.vae.sensors or len(self.scaler.center) != self.vae.sensors:
            raise ValueError(
                f"{len(self.sensors)} sensor names, {len(self.scaler.center)} scaler entries and a VAE "
                f"for {self.vae.sensors} sensors do not match"
            )

    def scorer(self, **options) -> Scorer:
        return Scorer(self.vae, self.scaler, self.weighting, **options)


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


def _params_bytes(vae: VAE) -> bytes:
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
        "scoring": {"weighting": model.weighting},
        "threshold": model.threshold.to_dict(),
        "persistence": model.persistence.to_dict(),
        "libraries": library_versions(),
    } | {k: v for k, v in model.metadata.items() if k not in ("libraries", "created_at")}
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
        (tmp / PARAMS_FILE).write_bytes(params)
        for name, content in extra.items():
            (tmp / name).write_bytes(content)
        files = [CONFIG_FILE, PARAMS_FILE, *extra]
        sums = "".join(f"{_sha256(tmp / name)}  {name}\n" for name in files)
        (tmp / MANIFEST_FILE).write_text(sums)
        for name in (*files, MANIFEST_FILE):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def verify(directory: str | os.PathLike) -> None:
    """Check the manifest: both files listed, present, and with the recorded SHA-256."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: not a model directory (it does not exist or is not a directory)")
    manifest = directory / MANIFEST_FILE
    if not manifest.is_file():
        raise ArtifactError(f"{directory}: no {MANIFEST_FILE} manifest; not a complete Vigil model")
    expected = {}
    for number, line in enumerate(manifest.read_text(errors="replace").splitlines(), 1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise ArtifactError(f"{manifest}, line {number}: malformed manifest entry {line!r}")
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


def _require(config: dict, key: str, path: Path):
    if key not in config:
        raise ArtifactError(f"{path}: missing key {key!r}")
    return config[key]


def load(directory: str | os.PathLike) -> TrainedModel:
    """Load and verify a model artifact; raises ArtifactError saying what is wrong."""
    directory = Path(directory)
    verify(directory)
    path = directory / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON: {e}") from None
    schema = _require(config, "schema_version", path)
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: schema version {schema!r} is newer than this Vigil understands ({SCHEMA_VERSION}); upgrade Vigil"
        )
    try:
        sensors = tuple(str(s) for s in _require(config, "sensors", path))
        model_config = ModelConfig.from_dict(_require(config, "model", path))
        scaler = Scaler.from_dict(_require(config, "scaler", path))
        threshold = Threshold.from_dict(_require(config, "threshold", path))
        persistence = Persistence(**_require(config, "persistence", path))
        weighting = _require(config, "scoring", path)["weighting"]
    except (TypeError, KeyError, ValueError) as e:
        if isinstance(e, ArtifactError):
            raise
        raise ArtifactError(f"{path}: invalid model description: {e}") from None
    abstract = nnx.eval_shape(lambda: VAE(model_config, len(sensors), rngs=nnx.Rngs(0)))
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
    nnx.replace_by_pure_dict(state, jax.tree.map(np.asarray, restored))
    vae = nnx.merge(graphdef, state)
    known = {"schema_version", "version", "sensors", "window", "model", "scaler", "scoring", "threshold", "persistence"}
    metadata = {k: v for k, v in config.items() if k not in known}
    try:
        return TrainedModel(sensors, model_config, scaler, vae, threshold, persistence, weighting,
                            str(config.get("version", "")), metadata)
    except ValueError as e:
        raise ArtifactError(f"{path}: {e}") from None
