"""`vigil serve` settings: flag > VIGIL_* environment variable > TOML file [serve] > default.

Every field of ServeSettings is settable each way: `--alerts-topic X`,
`VIGIL_ALERTS_TOPIC=X`, or `alerts_topic = "X"` under [serve] in the file given by
`--config` (or VIGIL_CONFIG). Settings are read once, here, at start-up.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path


class SettingsError(ValueError):
    """A bad setting; the message names where it came from."""


@dataclass(frozen=True)
class ServeSettings:
    model: str = ""                         # model directory, or registry directory (hot reload)
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "vigil.readings"
    group: str = "vigil"
    alerts_topic: str = "vigil.alerts"
    dlq_topic: str = "vigil.dlq"
    metrics_addr: str = "127.0.0.1:9108"
    batch_size: int = 5000                  # records per micro-batch at most
    max_wait_ms: int = 100                  # longest wait to fill a micro-batch
    max_message_bytes: int = 1 << 20       # larger records are dead-lettered as "oversized"
    max_assets: int = 100_000               # per-asset state cap; the longest-idle asset is dropped beyond it
    idle_seconds: float = 3600.0            # assets without readings this long are forgotten (labels removed)
    rewind_seconds: float = 600.0           # history re-read on assignment to refill windows
    alert_k: int = 3                        # alert opens when k of the last n windows are over threshold
    alert_n: int = 5
    exit_threshold: float = 0.8             # ... and resolves after resolve_after windows under this
    resolve_after: int = 30
    update_seconds: float = 10.0            # at most one update event per alert per this much time
    reload_seconds: float = 5.0             # how often a registry's `current` file is checked
    log_level: str = "info"

    def validate(self) -> ServeSettings:
        if not self.model:
            raise SettingsError("model: required (--model, VIGIL_MODEL or model = ... under [serve])")
        for name in ("batch_size", "max_wait_ms", "max_assets", "max_message_bytes", "alert_k", "alert_n", "resolve_after"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.alert_k > self.alert_n:
            raise SettingsError(f"alert_k: must be <= alert_n ({self.alert_n}), got {self.alert_k}")
        if not 0 < self.exit_threshold <= 1:
            raise SettingsError(f"exit_threshold: must be in (0, 1], got {self.exit_threshold}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise SettingsError(f"log_level: must be debug, info, warning or error, got {self.log_level!r}")
        return self


FIELDS = {f.name: f for f in fields(ServeSettings)}


def read_toml(path: Path, error: type[ValueError]) -> dict:
    """Parse a TOML file; a missing or invalid file raises `error` naming the file."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: invalid TOML: {e}") from None


def _convert(name: str, raw, where: str):
    kind = type(getattr(ServeSettings(), name))
    if isinstance(raw, str) and kind is not str:
        try:
            return kind(raw)
        except ValueError:
            raise SettingsError(f"{where}: {name}: expected {kind.__name__}, got {raw!r}") from None
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if not isinstance(raw, kind) or isinstance(raw, bool):
        raise SettingsError(f"{where}: {name}: expected {kind.__name__}, got {raw!r}")
    return raw


def load_settings(flags: Mapping[str, object], env: Mapping[str, str] | None = None,
                  config: str | None = None) -> ServeSettings:
    """Merge defaults, the TOML file, VIGIL_* variables and flags (None = flag not given)."""
    env = os.environ if env is None else env
    values: dict = {}
    config = config or env.get("VIGIL_CONFIG")
    if config:
        path = Path(config)
        doc = read_toml(path, SettingsError)
        for key, raw in doc.get("serve", {}).items():
            if key not in FIELDS:
                raise SettingsError(f"{path}: serve.{key}: unknown key")
            values[key] = _convert(key, raw, str(path))
    for name in FIELDS:
        var = f"VIGIL_{name.upper()}"
        if var in env:
            values[name] = _convert(name, env[var], f"environment {var}")
    for name, raw in flags.items():
        if raw is not None and name in FIELDS:
            values[name] = _convert(name, raw, f"--{name.replace('_', '-')}")
    return dataclasses.replace(ServeSettings(), **values).validate()
