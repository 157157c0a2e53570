"""Training configuration: one object, read once from TOML and command-line overrides.

Example FILE.toml (every key optional; unknown keys are an error):

    [model]
    window = 60            # time steps per window
    hidden = [128]         # hidden layer sizes of encoder (mirrored by the decoder)
    latent = 16
    activation = "silu"

    [training]
    epochs = 100           # upper bound; early stopping usually ends sooner
    batch_size = 128
    learning_rate = 1e-3
    beta = 1.0             # weight of the KL term in the ELBO
    validation_fraction = 0.25
    patience = 10          # epochs without validation improvement before stopping
    max_steps_per_epoch = 200
    seed = 0
    interval_seconds = 5.0 # the sampling interval; default: inferred from the data (median spacing)
    off_condition = "motor_current < 0.5"  # when the machine is switched off (default: never)
    off_settle_seconds = 60.0  # readings this soon after an off one count as off (the machine settles)

    [threshold]
    method = "pot"         # "pot" (peaks over threshold) or "quantile"
    per_day = 1.0          # pot: normal windows over the threshold per asset and day (see risk)
    risk = 1e-3            # pot: instead of per_day, the probability that a normal window exceeds it
    init_quantile = 0.98   # pot: where the fitted tail starts
    q = 0.999              # quantile: which quantile of validation scores
    margin = 1.0           # both methods: a factor on the calibrated value (1: as calibrated)
    cross_fit = true       # fit to validation scores each measured on the other half's sensor scales

    [alerting]
    persistence_k = 3      # flag when k of the last n windows are over threshold
    persistence_n = 5

    [scoring]
    weighting = "precision"  # weigh squared errors by the learned per-sensor precision, or "none"

A [gate] table is read by `vigil retrain` (training.retrain.load_gate) and ignored here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

from detector.model import ModelConfig
from detector.scoring import AGGREGATES, FOCUSES, NORMALIZATIONS, SCORE_WEIGHTINGS, ScoreRule
from detector.settings import read_toml
from detector.threshold import THRESHOLD_METHODS, Persistence


def validation_start(rows: int, window: int, fraction: float) -> int:
    """Index of a file's first validation row (its last `fraction` of rows, at least a window),
    or `rows` when the file is too short to split: the one split of training, and of the
    data checks that look at the two parts (training.dataquality)."""
    val_rows = max(int(round(rows * fraction)), window)
    if rows - val_rows < window:
        return rows
    return rows - val_rows


# pot's risk without a sampling interval (windows of rows), and the largest per_day may give
# (slow data: one window a day over the threshold of hourly readings would be 1 in 24)
DEFAULT_RISK, MAX_RISK = 1e-3, 1e-2


class ConfigError(ValueError):
    """An invalid configuration; the message names the file and key."""


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 100
    batch_size: int = 128
    learning_rate: float = 1e-3
    beta: float = 1.0
    validation_fraction: float = 0.25
    patience: int = 10
    max_steps_per_epoch: int = 200
    seed: int = 0
    robust_fraction: float = 0.0
    robust_warmup: int = 5
    interval_seconds: float | None = None
    off_condition: str | None = None
    off_settle_seconds: float = 60.0
    threshold_method: str = "pot"
    per_day: float = 1.0
    risk: float | None = None
    init_quantile: float = 0.98
    q: float = 0.999
    margin: float = 1.0
    min_shape: float = 0.0
    cross_fit: bool = True
    persistence_k: int = 3
    persistence_n: int = 5
    weighting: str = "precision"
    normalization: str = "tail"
    focus: str = "window"
    aggregate: str = "top"
    top_k: int = 3

    def __post_init__(self):
        checks = [
            (self.epochs >= 0, "training.epochs", "must be >= 0"),
            (self.batch_size >= 1, "training.batch_size", "must be >= 1"),
            (self.learning_rate > 0, "training.learning_rate", "must be > 0"),
            (self.beta >= 0, "training.beta", "must be >= 0"),
            (0 < self.validation_fraction < 1, "training.validation_fraction", "must be between 0 and 1"),
            (self.patience >= 1, "training.patience", "must be >= 1"),
            (0 <= self.robust_fraction < 1, "training.robust_fraction", "must be >= 0 and < 1"),
            (self.robust_warmup >= 0, "training.robust_warmup", "must be >= 0"),
            (self.interval_seconds is None or (isinstance(self.interval_seconds, (int, float))
                                               and not isinstance(self.interval_seconds, bool)
                                               and 0 < self.interval_seconds < float("inf")),
             "training.interval_seconds", "must be a number of seconds > 0"),
            (self.off_condition is None or (isinstance(self.off_condition, str) and self.off_condition.strip() != ""),
             "training.off_condition", 'must be a condition such as "motor_current < 0.5"'),
            (0 <= self.off_settle_seconds < float("inf"), "training.off_settle_seconds", "must be >= 0"),
            (self.max_steps_per_epoch >= 1, "training.max_steps_per_epoch", "must be >= 1"),
            (self.threshold_method in THRESHOLD_METHODS, "threshold.method", f"must be one of {THRESHOLD_METHODS}"),
            (self.per_day > 0, "threshold.per_day", "must be > 0"),
            (self.risk is None or (isinstance(self.risk, (int, float)) and not isinstance(self.risk, bool)
                                   and 0 < self.risk < 1), "threshold.risk", "must be between 0 and 1"),
            (0 < self.init_quantile < 1, "threshold.init_quantile", "must be between 0 and 1"),
            (0 < self.q < 1, "threshold.q", "must be between 0 and 1"),
            (self.margin > 0, "threshold.margin", "must be > 0"),
            (1 <= self.persistence_k <= self.persistence_n, "alerting.persistence_k",
             "must be between 1 and alerting.persistence_n"),
            (self.weighting in SCORE_WEIGHTINGS, "scoring.weighting", f"must be one of {SCORE_WEIGHTINGS}"),
            (self.normalization in NORMALIZATIONS, "scoring.normalization", f"must be one of {NORMALIZATIONS}"),
            (self.focus in FOCUSES, "scoring.focus", f"must be one of {FOCUSES}"),
            (self.aggregate in AGGREGATES, "scoring.aggregate", f"must be one of {AGGREGATES}"),
            (self.top_k >= 1, "scoring.top_k", "must be >= 1"),
        ]
        for ok, key, message in checks:
            if not ok:
                raise ConfigError(f"{key} {message}")

    @property
    def persistence(self) -> Persistence:
        return Persistence(self.persistence_k, self.persistence_n)

    @property
    def score_rule(self) -> ScoreRule:
        """The scoring rule before calibration (no per-sensor location and spread yet)."""
        return ScoreRule(self.normalization, self.focus, self.aggregate, self.top_k, self.weighting)

    def window_risk(self, interval_seconds: float | None) -> float:
        """The probability that a normal window exceeds the threshold (pot): `risk` when given,
        else per_day windows in a day of the sampling interval (at most MAX_RISK; DEFAULT_RISK
        when the interval is unknown)."""
        if self.risk is not None:
            return float(self.risk)
        if not interval_seconds:
            return DEFAULT_RISK
        return min(self.per_day * interval_seconds / 86400.0, MAX_RISK)

    def threshold_options(self, interval_seconds: float | None = None) -> dict:
        if self.threshold_method == "pot":
            return {"risk": self.window_risk(interval_seconds), "init_quantile": self.init_quantile,
                    "margin": self.margin, "min_shape": self.min_shape}
        return {"q": self.q, "margin": self.margin}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"model": self.model.to_dict()}


# TOML section -> {key: TrainConfig field}; the [model] section maps onto ModelConfig.
SECTIONS = {
    "training": {k: k for k in ("epochs", "batch_size", "learning_rate", "beta", "validation_fraction",
                                "patience", "max_steps_per_epoch", "seed", "robust_fraction", "robust_warmup",
                                "interval_seconds", "off_condition", "off_settle_seconds")},
    "threshold": {"method": "threshold_method", "per_day": "per_day", "risk": "risk", "init_quantile": "init_quantile",
                  "q": "q", "margin": "margin", "min_shape": "min_shape",
                  "cross_fit": "cross_fit"},
    "alerting": {"persistence_k": "persistence_k", "persistence_n": "persistence_n"},
    "scoring": {k: k for k in ("weighting", "normalization", "focus", "aggregate", "top_k")},
}
MODEL_KEYS = {f.name for f in fields(ModelConfig)}
_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def _coerce(where: str, value, like):
    """Check a TOML value against the type of the default it replaces."""
    if isinstance(like, bool) or isinstance(like, str):
        ok = isinstance(value, type(like))
    elif isinstance(like, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(like, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(like, tuple):
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: expected {type(like).__name__}, got {value!r}")
    return value


def load_config(path: str | Path | None = None, **overrides) -> TrainConfig:
    """TrainConfig from defaults, then the TOML file, then keyword overrides (None = not given).

    Overrides use TrainConfig field names plus ModelConfig's (window, hidden, architecture, ...).
    """
    base, model = TrainConfig(), ModelConfig()
    values: dict = {}
    model_values: dict = {}
    if path is not None:
        path = Path(path)
        doc = read_toml(path, ConfigError)
        for section, table in doc.items():
            if section == "gate":
                continue
            if section != "model" and section not in SECTIONS:
                raise ConfigError(f"{path}: unknown section [{section}] (known: model, {', '.join(SECTIONS)})")
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: {section} must be a [section]")
            for key, value in table.items():
                where = f"{path}: {section}.{key}"
                if section == "model":
                    if key not in MODEL_KEYS:
                        raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(MODEL_KEYS))})")
                    model_values[key] = _coerce(where, value, getattr(model, key))
                else:
                    if key not in SECTIONS[section]:
                        raise ConfigError(f"{where}: unknown key (known: {', '.join(SECTIONS[section])})")
                    name = SECTIONS[section][key]
                    values[name] = _coerce(where, value, getattr(base, name) if name != "risk" else DEFAULT_RISK)
    for name, value in overrides.items():
        if value is None:
            continue
        if name in MODEL_KEYS:
            model_values[name] = tuple(value) if isinstance(value, list) else value
        elif name in _TYPES and name != "model":
            values[name] = value
        else:
            raise ConfigError(f"unknown setting {name!r}")
    try:
        return TrainConfig(model=ModelConfig(**(dataclasses.asdict(model) | model_values)), **values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: [model]: {e}" if path else str(e)) from None
