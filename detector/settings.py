"""`vigil serve` settings: flag > VIGIL_* environment variable > TOML file [serve] > default.

Every field of ServeSettings is settable each way: `--alerts-topic X`,
`VIGIL_ALERTS_TOPIC=X`, or `alerts_topic = "X"` under [serve] in the file given by
`--config` (or VIGIL_CONFIG). Settings are read once, here, at start-up.

update_seconds, update_rise and update_heartbeat_seconds decide when an open alert sends an
update (see detector.alerts for what each means and why the defaults suit 1 s and 1 min
sampling alike): at most every 10 s of reading time, when the score reached 1.5 x the level
last reported, a new sensor leads, or an hour of reading time passed without an event.

alert_k and alert_n are unset by default: alerts follow the serving model's persistence rule
(the one `vigil score` flags rows by). Set, they override it; "model" (or an empty value)
unsets one given at a lower level, e.g. VIGIL_ALERT_K=model over the file's alert_k.

Kafka security (KafkaSecurity) is the same for every command: VIGIL_KAFKA_* variables
(security_from_env); `vigil serve` also takes them as its kafka_* settings. Secrets are never
settings: the SASL password comes from VIGIL_KAFKA_PASSWORD or the file named by
kafka_sasl_password_file, an encrypted key's password from VIGIL_KAFKA_SSL_KEY_PASSWORD or
kafka_ssl_key_password_file. No flag or TOML key carries a secret.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from detector.alerts import AlertPolicy
from detector.routes import Route, RouteError, default_route, parse_routes
from detector.storm import StormPolicy
from detector.threshold import Persistence

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
PASSWORD_ENV = "VIGIL_KAFKA_PASSWORD"
KEY_PASSWORD_ENV = "VIGIL_KAFKA_SSL_KEY_PASSWORD"


class SettingsError(ValueError):
    """A bad setting; the message names where it came from."""


@dataclass(frozen=True)
class KafkaSecurity:
    """How Vigil's Kafka clients encrypt and authenticate (detector.kafka_client turns it into
    client options). Messages name each field as the setting kafka_<field>."""

    security_protocol: str = "PLAINTEXT"    # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    ssl_cafile: str = ""                    # CA bundle (PEM) for the brokers' certificates; "" = system CAs
    ssl_certfile: str = ""                  # client certificate (PEM) for brokers that require one
    ssl_keyfile: str = ""                   # its private key (PEM), unless in ssl_certfile
    ssl_check_hostname: bool = True         # the broker's certificate must name the host connected to
    ssl_key_password_file: str = ""         # the key's password, if encrypted (or VIGIL_KAFKA_SSL_KEY_PASSWORD)
    sasl_mechanism: str = ""                # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    sasl_username: str = ""
    sasl_password_file: str = ""            # the password (or VIGIL_KAFKA_PASSWORD), e.g. a mounted secret
    password: str = field(default="", repr=False, metadata={"secret": True})
    ssl_key_password: str = field(default="", repr=False, metadata={"secret": True})

    @property
    def tls(self) -> bool:
        return self.security_protocol.upper() in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.upper() in ("SASL_PLAINTEXT", "SASL_SSL")

    def validate(self) -> KafkaSecurity:
        protocol = self.security_protocol.upper()
        if protocol not in KAFKA_PROTOCOLS:
            raise SettingsError(f"kafka_security_protocol: must be one of {', '.join(KAFKA_PROTOCOLS)}, "
                                f"got {self.security_protocol!r}")
        given = [n for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password_file") if getattr(self, n)]
        if given and not self.tls:
            raise SettingsError(f"kafka_{given[0]}: only used with kafka_security_protocol SSL or SASL_SSL, "
                                f"not {protocol}")
        given = [n for n in ("sasl_mechanism", "sasl_username", "sasl_password_file") if getattr(self, n)]
        if given and not self.sasl:
            raise SettingsError(f"kafka_{given[0]}: only used with kafka_security_protocol SASL_SSL or "
                                f"SASL_PLAINTEXT, not {protocol}")
        if self.password and not self.sasl:
            raise SettingsError(f"{PASSWORD_ENV} is set but kafka_security_protocol is {protocol} (no SASL)")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not os.access(path, os.R_OK):
                raise SettingsError(f"kafka_{name}: {path}: {'unreadable' if Path(path).is_file() else 'no such file'}")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise SettingsError("kafka_ssl_keyfile: needs kafka_ssl_certfile (the client certificate)")
        if self.ssl_key_password and not self.ssl_certfile:
            raise SettingsError("kafka_ssl_key_password_file / VIGIL_KAFKA_SSL_KEY_PASSWORD: no key to decrypt "
                                "(kafka_ssl_certfile is not set)")
        if self.sasl:
            if self.sasl_mechanism.upper() not in SASL_MECHANISMS:
                raise SettingsError(f"kafka_sasl_mechanism: must be one of {', '.join(SASL_MECHANISMS)} with "
                                    f"{protocol}, got {self.sasl_mechanism!r}")
            if not self.sasl_username:
                raise SettingsError(f"kafka_sasl_username: required with SASL ({self.sasl_mechanism.upper()})")
            if not self.password:
                raise SettingsError(f"the password of Kafka user {self.sasl_username!r} is missing: set "
                                    f"{PASSWORD_ENV} or kafka_sasl_password_file")
        return self


KAFKA_FIELDS = tuple(f.name for f in fields(KafkaSecurity) if not f.metadata.get("secret"))


def _secret(env: Mapping[str, str], var: str, path: str, setting: str) -> str:
    """A secret from the environment variable `var` or the file `path` (one of them)."""
    if env.get(var) and path:
        raise SettingsError(f"{setting}: set either {var} or {setting}, not both")
    if not path:
        return env.get(var, "")
    try:
        value = Path(path).read_text().rstrip("\r\n")  # files often end in a newline, secrets do not
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"{setting}: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not value:
        raise SettingsError(f"{setting}: {path} is empty")
    return value


def kafka_security(values: Mapping[str, object], env: Mapping[str, str]) -> KafkaSecurity:
    """KafkaSecurity from its settings (by field name, without secrets) and the secrets from the
    environment or the files the settings name; validated."""
    security = KafkaSecurity(**values)
    return dataclasses.replace(
        security,
        password=_secret(env, PASSWORD_ENV, security.sasl_password_file, "kafka_sasl_password_file"),
        ssl_key_password=_secret(env, KEY_PASSWORD_ENV, security.ssl_key_password_file,
                                 "kafka_ssl_key_password_file"),
    ).validate()


def security_from_env(env: Mapping[str, str] | None = None) -> KafkaSecurity:
    """Every command's Kafka security: VIGIL_KAFKA_<FIELD> variables (VIGIL_KAFKA_SECURITY_PROTOCOL,
    VIGIL_KAFKA_SSL_CAFILE, ...) plus VIGIL_KAFKA_PASSWORD / VIGIL_KAFKA_SSL_KEY_PASSWORD."""
    env = os.environ if env is None else env
    values = {}
    for name in KAFKA_FIELDS:
        var = f"VIGIL_KAFKA_{name.upper()}"
        if var in env:
            values[name] = _convert(f"kafka_{name}", env[var], f"environment {var}")
    return kafka_security(values, env)


@dataclass(frozen=True)
class ServeSettings:
    model: str = ""                         # model directory, or registry directory (hot reload)
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "vigil.readings"
    group: str = "vigil"
    alerts_topic: str = "vigil.alerts"
    dlq_topic: str = "vigil.dlq"
    scores_topic: str = ""                  # if set: every window's score is produced here (asset, ts, score)
    shadow_alerts_topic: str = ""           # a shadow model's would-be alerts ("": alerts_topic + ".shadow")
    labels_topic: str = "vigil.labels"      # operators' labels of alerts (vigil label), counted; "": not read
    label_wait_seconds: float = 86400.0     # an open alert unlabelled this long counts in vigil_alerts_unlabelled
    metrics_addr: str = "127.0.0.1:9108"
    batch_size: int = 5000                  # records per micro-batch at most
    max_wait_ms: int = 100                  # longest wait to fill a micro-batch
    max_message_bytes: int = 1 << 20       # larger records are dead-lettered as "oversized"
    max_assets: int = 100_000               # per-asset state cap; the longest-idle asset is dropped beyond it
    idle_seconds: float = 3600.0            # assets without readings this long are forgotten (labels removed)
    rewind_seconds: float = 600.0           # history re-read on assignment to refill windows
    session_timeout_ms: int = 10_000        # a consumer that stops heartbeating loses its partitions after this
    # alert opens when k of the last n windows are over threshold; unset (None): the serving
    # model's persistence rule, the one `vigil score` flags rows by (also after a hot reload)
    alert_k: int | None = field(default=None, metadata={"unset": "the model's persistence k"})
    alert_n: int | None = field(default=None, metadata={"unset": "the model's persistence n"})
    exit_threshold: float = 0.8             # ... and resolves after resolve_after windows under this
    resolve_after: int = 30
    update_seconds: float = 10.0            # at most one update event per alert per this much reading time
    update_rise: float = 1.5                # an update when score / threshold reaches this multiple of the last event's
    update_heartbeat_seconds: float = 3600.0  # an update anyway after this much reading time without an event
    reload_seconds: float = 5.0             # how often a registry's `current` file is checked
    alert_lookback_seconds: float = 86400.0 # at start-up, alerts opened this far back and not resolved are taken up
    # alert storm (detector.storm): starts when at least storm_min_assets assets, and more than
    # storm_share of the known assets, opened an alert (still open) within storm_window_seconds
    # of reading time; ends when fewer than storm_end_share of them still have an open alert
    storm_share: float = 0.2
    storm_min_assets: int = 3
    storm_window_seconds: float = 300.0
    storm_end_share: float = 0.1
    log_level: str = "info"
    # Kafka security: KafkaSecurity's fields; the secrets only from the environment or files
    kafka_security_protocol: str = KafkaSecurity.security_protocol
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    kafka_ssl_check_hostname: bool = KafkaSecurity.ssl_check_hostname
    kafka_ssl_key_password_file: str = ""
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password_file: str = ""
    kafka_password: str = field(default="", repr=False, metadata={"secret": True})
    kafka_ssl_key_password: str = field(default="", repr=False, metadata={"secret": True})
    # several models in one daemon (detector.routes): [[serve.routes]] tables of the config file only
    routes: tuple[Route, ...] = field(default=(), metadata={"file_only": True})

    @property
    def kafka(self) -> KafkaSecurity:
        return KafkaSecurity(**{name: getattr(self, f"kafka_{name}") for name in KAFKA_FIELDS},
                             password=self.kafka_password, ssl_key_password=self.kafka_ssl_key_password)

    def all_routes(self) -> tuple[Route, ...]:
        """The routes in matching order; `model`, when given, is the last one (matches every asset)."""
        return self.routes + ((default_route(self.model),) if self.model else ())

    def validate(self) -> ServeSettings:
        if not self.model and not self.routes:
            raise SettingsError("model: required (--model, VIGIL_MODEL or model = ... under [serve]), "
                                "or [[serve.routes]] in the config file")
        for name in ("batch_size", "max_wait_ms", "max_assets", "max_message_bytes", "alert_k", "alert_n", "resolve_after",
                     "session_timeout_ms"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SettingsError(f"{name}: must be >= 1, got {value}")
        if self.alert_k is not None and self.alert_n is not None and self.alert_k > self.alert_n:
            raise SettingsError(f"alert_k: must be <= alert_n ({self.alert_n}), got {self.alert_k}")
        # one of them alone is checked against the model's rule when the model is known (alert_policy)
        if not 0 < self.exit_threshold <= 1:
            raise SettingsError(f"exit_threshold: must be in (0, 1], got {self.exit_threshold}")
        for name in ("update_seconds", "update_heartbeat_seconds"):
            value = getattr(self, name)
            if not 0 <= value < float("inf"):
                raise SettingsError(f"{name}: must be a number of seconds >= 0, got {value}")
        if not 1 < self.update_rise < float("inf"):
            raise SettingsError(f"update_rise: must be a factor > 1 (1.5: an update when the score reaches 1.5 x "
                                f"the level last reported), got {self.update_rise}")
        if self.update_heartbeat_seconds >= self.alert_lookback_seconds:
            raise SettingsError(f"update_heartbeat_seconds: must be less than alert_lookback_seconds "
                                f"({self.alert_lookback_seconds:g}), or a restarted daemon may not find an alert "
                                f"that is still open; got {self.update_heartbeat_seconds:g}")
        if self.labels_topic and self.labels_topic in (self.topic, self.alerts_topic, self.dlq_topic, self.scores_topic):
            raise SettingsError(f"labels_topic: {self.labels_topic!r} is also the readings, alerts, dead-letter or "
                                "scores topic; labels need a topic of their own ('' : do not read labels)")
        if not 0 < self.label_wait_seconds < float("inf"):
            raise SettingsError(f"label_wait_seconds: must be a number of seconds > 0, got {self.label_wait_seconds}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise SettingsError(f"log_level: must be debug, info, warning or error, got {self.log_level!r}")
        self.storm_policy()
        self.kafka.validate()
        return self

    def storm_policy(self) -> StormPolicy:
        """The alert-storm policy; SettingsError naming the setting when a value is out of range."""
        try:
            return StormPolicy(self.storm_share, self.storm_min_assets, self.storm_window_seconds, self.storm_end_share)
        except ValueError as e:
            raise SettingsError(str(e)) from None

    def alert_policy(self, persistence: Persistence) -> AlertPolicy:
        """The alert policy as configured (alert_k / alert_n None: the model's), after checking
        that it fits a model with this persistence rule (the model served first)."""
        policy = AlertPolicy(self.alert_k, self.alert_n, self.exit_threshold, self.resolve_after, self.update_seconds,
                             update_rise=self.update_rise, update_heartbeat_seconds=self.update_heartbeat_seconds)
        try:
            policy.for_model(persistence)
        except ValueError as e:
            raise SettingsError(str(e)) from None
        return policy


FIELDS = {f.name: f for f in fields(ServeSettings) if not f.metadata.get("secret") and not f.metadata.get("file_only")}
SECRETS = {"kafka_password": (PASSWORD_ENV, "kafka_sasl_password_file"),
           "kafka_ssl_key_password": (KEY_PASSWORD_ENV, "kafka_ssl_key_password_file")}
_KINDS = {"str": str, "int": int, "float": float, "bool": bool}


def shadow_topic_of(alerts_topic: str, shadow_alerts_topic: str = "") -> str:
    """Where a shadow model's would-be alerts go: shadow_alerts_topic, by default alerts_topic + ".shadow"."""
    return shadow_alerts_topic or alerts_topic + ".shadow"


def setting_type(name: str) -> tuple[type, bool]:
    """A setting's type and whether it may be unset (None), from its annotation ("int | None")."""
    parts = [part.strip() for part in str(FIELDS[name].type).split("|")]
    return _KINDS[parts[0]], "None" in parts[1:]


BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def read_toml(path: Path, error: type[ValueError]) -> dict:
    """Parse a TOML file; a missing or invalid file raises `error` naming the file."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: invalid TOML: {e}") from None


def _convert(name: str, raw, where: str):
    kind, optional = setting_type(name)
    if optional and isinstance(raw, str) and raw.strip().lower() in ("", "model"):
        return None  # unset: e.g. VIGIL_ALERT_K=model undoes the config file's alert_k
    if kind is bool:
        text = raw.strip().lower() if isinstance(raw, str) else None
        if isinstance(raw, bool) or text in BOOLEANS:
            return raw if isinstance(raw, bool) else BOOLEANS[text]
        raise SettingsError(f"{where}: {name}: expected true or false, got {raw!r}")
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
            if key in SECRETS:
                var, setting = SECRETS[key]
                raise SettingsError(f"{path}: serve.{key}: a secret is never read from the config file: "
                                    f"set {var}, or name a file holding it in {setting}")
            if key == "routes":
                try:
                    values["routes"] = parse_routes(raw, str(path))
                except RouteError as e:
                    raise SettingsError(str(e)) from None
                continue
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
    settings = dataclasses.replace(ServeSettings(), **values)
    security = kafka_security({name: getattr(settings, f"kafka_{name}") for name in KAFKA_FIELDS}, env)
    return dataclasses.replace(settings, kafka_password=security.password,
                               kafka_ssl_key_password=security.ssl_key_password).validate()
