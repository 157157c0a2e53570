"""The retraining job: train a challenger on recent normal data, compare it with the
current model on held-out recent data, and promote it only if it passes the gate.

Each recent series is split in time: the last `holdout_fraction` of its rows is held out
and never trained on; both models score it. All held-out rows are taken as normal (the
stretches around alerts were cut out before), so every flagged row is a false alarm.
With labelled files, both models are also scored on them and the challenger must
detect (nearly) as many labelled events as the current model.

The challenger is always registered (with its report), and made current only when
promoted, so a kept challenger can still be inspected or promoted by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from detector.artifact import TrainedModel, new_version, save
from detector.table import DataError, SensorTable
from detector.offline import score_tables
from detector.registry import load_current, promote, set_shadow
from training.config import ConfigError, TrainConfig
from training.evaluation import evaluate_model, runs
from training.job import train_model
from training.report import render_report

REPORT_FILE = "retrain.json"


@dataclass(frozen=True)
class Gate:
    """When a challenger replaces the current model (see module docstring)."""

    holdout_fraction: float = 0.2       # last part of each recent series, scored by both models
    max_false_alarm_rate: float = 0.01  # challenger: at most this fraction of held-out rows flagged...
    false_alarm_tolerance: float = 0.002  # ...and at most this much above the current model's rate
    recall_tolerance: float = 0.0       # with labels: event recall at most this much below the current's

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0 <= value < 1:
                raise ConfigError(f"gate.{f.name} must be between 0 and 1, got {value}")


def load_gate(path: str | Path | None = None, **overrides) -> Gate:
    """Gate from defaults, then the [gate] table of a TOML file, then overrides (None = not given)."""
    from detector.settings import read_toml

    values = {}
    if path is not None:
        table = read_toml(Path(path), ConfigError).get("gate", {})
        known = {f.name for f in fields(Gate)}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{path}: gate.{key}: unknown key (known: {', '.join(sorted(known))})")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{path}: gate.{key}: expected a number, got {value!r}")
            values[key] = float(value)
    values |= {k: v for k, v in overrides.items() if v is not None}
    return Gate(**values)


def split_holdout(tables: Sequence[SensorTable], fraction: float, window: int
                  ) -> tuple[list[SensorTable], list[SensorTable]]:
    """(train, held-out) parts of each table, split in time. A table too short to give
    both parts at least two windows goes to training only."""
    train, held = [], []
    for t in tables:
        cut = t.rows - int(round(t.rows * fraction))
        if cut < 2 * window or t.rows - cut < 2 * window:
            train.append(t)
            continue
        train.append(_rows(t, slice(0, cut)))
        held.append(_rows(t, slice(cut, t.rows)))
    return train, held


def _rows(t: SensorTable, part: slice) -> SensorTable:
    labels = None if t.labels is None else t.labels[part]
    return SensorTable(t.path, t.time_raw[part], t.time[part], t.sensors, t.values[part], labels)


def false_alarms(model: TrainedModel, tables: Sequence[SensorTable]) -> dict:
    """Flagged fraction of the scored rows of normal data, and the flagged episodes per day."""
    flagged = scored = episodes = 0
    seconds = 0.0
    for table, s in score_tables(model, tables):
        ok = np.isfinite(s.normalized)
        scored += int(ok.sum())
        flagged += int(s.flags[ok].sum())
        episodes += len(runs(s.flags))
        seconds += float(table.time[-1] - table.time[0]) if table.rows else 0.0
    return {"rows": scored, "flagged_rows": flagged, "false_alarm_rate": flagged / scored if scored else 0.0,
            "episodes": episodes, "episodes_per_day": episodes / (seconds / 86400) if seconds > 0 else None}


def decide(current: dict, challenger: dict, gate: Gate) -> list[str]:
    """Reasons to keep the current model; empty = promote the challenger."""
    reasons = []
    far, now = challenger["normal"]["false_alarm_rate"], current["normal"]["false_alarm_rate"]
    if far > gate.max_false_alarm_rate:
        reasons.append(f"challenger false-alarm rate {far:.4f} > gate.max_false_alarm_rate {gate.max_false_alarm_rate}")
    if far > now + gate.false_alarm_tolerance:
        reasons.append(f"challenger false-alarm rate {far:.4f} > current {now:.4f} + "
                       f"gate.false_alarm_tolerance {gate.false_alarm_tolerance}")
    if "labelled" in challenger:
        recall = challenger["labelled"]["event_recall"] or 0.0
        before = current["labelled"]["event_recall"] or 0.0
        if recall < before - gate.recall_tolerance:
            reasons.append(f"challenger event recall {recall:.3f} < current {before:.3f} - "
                           f"gate.recall_tolerance {gate.recall_tolerance}")
    if "operator_false_alarms" in challenger:
        mine, theirs = challenger["operator_false_alarms"]["flagged_rows"], current["operator_false_alarms"]["flagged_rows"]
        if mine > theirs or (mine == theirs and theirs > 0):
            reasons.append(f"challenger flags {mine} rows of the stretches labelled false_alarm, the current model "
                           f"{theirs}: not fewer")
    return reasons


def retrain(registry: str | Path, tables: Sequence[SensorTable], config: TrainConfig, gate: Gate,
            labelled: Sequence[SensorTable] = (), source: dict | None = None,
            say: Callable[[str], None] = lambda _m: None, shadow: bool = False,
            false_alarms_labelled: Sequence[SensorTable] = ()) -> tuple[str, bool, dict]:
    """Run the job (see the module docstring). Returns (challenger version, promoted?, report).
    shadow: a challenger that passes the gate becomes the registry's shadow (scored live beside
    current, detector.shadow) instead of current: report decision "shadowing".
    false_alarms_labelled: stretches operators labelled false_alarm (all normal): both models
    score them, and the challenger must flag fewer of their rows than the current model did."""
    registry = Path(registry)
    current = load_current(registry)
    if not tables:
        raise DataError("no recent data to train on (after leaving out the stretches around alerts)")
    missing = sorted(set(current.sensors) - set(tables[0].sensors))
    if missing:
        raise DataError(f"{tables[0].path}: the current model's sensors {missing} are missing")
    train, held = split_holdout(tables, gate.holdout_fraction, config.model.window)
    if not held:
        raise DataError(f"not enough recent data to hold out {gate.holdout_fraction:.0%} for the comparison "
                        f"(the longest series has {max(t.rows for t in tables)} rows, window {config.model.window})")
    say(f"training the challenger on {sum(t.rows for t in train)} rows from {len(train)} series, "
        f"holding out {sum(t.rows for t in held)} rows")
    challenger, training_report = train_model(
        train, config, lambda s: say(f"  epoch {s.epoch:3d}  loss {s.loss:9.4f}  val {s.val_loss:9.4f}"),
        sensors=current.sensors)
    say("comparing with the current model on the held-out rows")
    results = {}
    for name, model in (("current", current), ("challenger", challenger)):
        results[name] = {"version": model.version or "(new)", "normal": false_alarms(model, held)}
        if labelled:
            results[name]["labelled"] = evaluate_model(model, labelled)
        if false_alarms_labelled:
            results[name]["operator_false_alarms"] = false_alarms(model, false_alarms_labelled)
    reasons = decide(results["current"], results["challenger"], gate)
    challenger.version = new_version(challenger)
    results["challenger"]["version"] = challenger.version
    report = {"decision": "kept" if reasons else "shadowing" if shadow else "promoted", "reasons": reasons,
              "gate": asdict(gate),
              "source": source or {}, "train_rows": sum(t.rows for t in train),
              "holdout_rows": sum(t.rows for t in held), **results}
    extra = render_report(training_report) | {REPORT_FILE: (json.dumps(report, indent=2) + "\n").encode()}
    save(challenger, registry / challenger.version, extra=extra)
    if not reasons and shadow:
        set_shadow(registry, challenger.version)
    elif not reasons:
        promote(registry, challenger.version)
    return challenger.version, not reasons and not shadow, report


def config_of(model: TrainedModel) -> TrainConfig:
    """The training configuration a model was trained with (defaults where not recorded)."""
    from detector.model import ModelConfig

    recorded = dict(model.metadata.get("train_config") or {})
    known = {f.name for f in fields(TrainConfig)} - {"model"}
    return TrainConfig(model=model.config if "model" not in recorded else ModelConfig.from_dict(recorded["model"]),
                       **{k: v for k, v in recorded.items() if k in known})
