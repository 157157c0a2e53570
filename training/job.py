"""The training job: sensor tables in, a calibrated TrainedModel and its report out.

Each file is put on the model's time grid (detector.grid: the sampling interval given or
inferred, readings in one interval averaged, missing intervals masked, a long gap ending
the run) and split in time: the first part of its intervals trains, the last
`validation_fraction` validates (early stopping and threshold calibration). Only windows
the detector would score are used (within one run, observed enough); they never cross a
file boundary nor the train/validation boundary.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import numpy as np

from detector.artifact import TrainedModel
from detector.table import DataError, SensorTable, admit_late
from detector.grid import TimeGrid, place
from detector.offcondition import ConditionError, OffCondition
from detector.preprocessing import Scaler, model_input
from detector.sampling import duration, infer_sampling
from detector.scoring import calibrate_rule, cross_fitted_scores
from detector.threshold import Threshold, calibrate
from training.config import TrainConfig, validation_start
from training.train import EpochStats, WindowData, fit


def _window_starts(scorable: np.ndarray, lo: int, hi: int, window: int) -> np.ndarray:
    """Starts (within the series) of the windows inside rows lo..hi-1 that the detector scores."""
    ends = lo + window - 1 + np.flatnonzero(scorable[lo + window - 1:hi])
    return (ends - window + 1).astype(np.int32)


def _off_condition(text: str | None, sensors: Sequence[str], settle: float) -> OffCondition | None:
    if text is None:
        return None
    try:
        return OffCondition.parse(text, sensors, settle)
    except ConditionError as e:
        raise DataError(f"training.off_condition: {e}") from None


WARM_UP_LIMIT_SECONDS = 3600.0
WARM_UP_GAP_SECONDS = 60.0
# The settle time suggested is this multiple of the longest warm-up seen, in whole minutes: a
# few switch-ons are a small sample, and a model trained with a longer settle time learns less
# of the warm-up, so it is seen longer (2.0, as the threshold's margin).
WARM_UP_MARGIN = 2.0


def _warm_up(model: TrainedModel, tables: Sequence[SensorTable]) -> float:
    """How long after a switch-on (the off condition stops holding) the trained model still
    scores the training data over threshold: the end of the episode of windows over threshold
    that starts with the run's first scored windows (windows over threshold at most
    WARM_UP_GAP_SECONDS apart; within WARM_UP_LIMIT_SECONDS and before the next switch-off),
    the longest over all switch-ons, in seconds (0: none). A warm-up longer than
    off_settle_seconds alerts in service at every start, so training suggests a longer one."""
    from detector.offline import score_table  # the detector's own scoring of the same rows

    longest, gap = 0.0, WARM_UP_GAP_SECONDS * 1000
    for table in tables:
        holds = model.off.holds(table.select(model.sensors))
        ons = np.flatnonzero(holds[:-1] & ~holds[1:]) + 1
        if not len(ons):
            continue
        times = table.times_ms()
        normalized = score_table(model, table).normalized
        offs = np.flatnonzero(holds)
        for i in ons.tolist():
            nxt = np.searchsorted(offs, i)
            end = min(offs[nxt] if nxt < len(offs) else len(times),
                      int(np.searchsorted(times, times[i] + WARM_UP_LIMIT_SECONDS * 1000)))
            scored = np.flatnonzero(np.isfinite(normalized[i:end]))
            with np.errstate(invalid="ignore"):
                bad = times[i + np.flatnonzero(normalized[i:end] > 1.0)]
            if not len(scored) or not len(bad) or bad[0] > times[i + scored[0]] + gap:
                continue  # the run starts quietly
            breaks = np.flatnonzero(np.diff(bad) > gap)
            last = bad[breaks[0]] if len(breaks) else bad[-1]
            longest = max(longest, (last - times[i]) / 1000.0)
    return longest


def _rows_of(interval: float | None) -> str:
    """What a window is made of: 'intervals of 5 min', or 'rows' (interval unknown)."""
    return f"intervals of {duration(interval)}" if interval else "rows"


def _scored(scorable: np.ndarray, *per_window: np.ndarray) -> tuple[np.ndarray, ...]:
    """Of arrays with one entry per full window, the entries of the windows the detector scores."""
    return tuple(a[scorable[:len(a)]] for a in per_window)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def train_model(tables: Sequence[SensorTable], config: TrainConfig,
                progress: Callable[[EpochStats], None] | None = None,
                sensors: Sequence[str] | None = None) -> tuple[TrainedModel, dict]:
    """Train and calibrate on normal data. Returns (model, report dict).

    sensors: the sensor columns to model, in order (default: the first file's).
    """
    t0 = time.perf_counter()
    window = config.model.window
    sensors = tuple(sensors or tables[0].sensors)
    sampling = infer_sampling([t.time for t in tables])
    interval = config.interval_seconds or sampling.interval_seconds
    tables = [admit_late(t, interval) for t in tables]  # rows a little late count, as the daemon takes them
    grid = TimeGrid.of(window, interval)
    off = _off_condition(config.off_condition, sensors, config.off_settle_seconds)
    placed, off_rows = [], 0
    for t in tables:  # as the detector windows them, off rows left out as if they had not come
        values, times = t.select(sensors), t.times_ms()
        if off is not None:
            on = ~off.off_rows(times, values)
            off_rows += int(len(on) - on.sum())
            values, times = values[on], times[on]
        placed.append(place(times, values, grid))
    series = [p.rows for p in placed]
    splits = [validation_start(len(v), window, config.validation_fraction) for v in series]
    train_rows = [v[:s] for v, s in zip(series, splits)]
    if not any(len(r) >= window for r in train_rows) or all(s == len(v) for v, s in zip(series, splits)):
        need = int(np.ceil(2 * window / min(config.validation_fraction, 1 - config.validation_fraction)))
        raise DataError(
            f"not enough rows to train with window {window}: the longest file has "
            f"{max(len(v) for v in series)} {_rows_of(interval)}, need about {need} (or a smaller --window)"
        )
    scaler = Scaler.fit(np.concatenate(train_rows))
    values, masks, train_starts, val_starts = [], [], [], []
    offset = 0
    for v, s, p in zip(series, splits, placed):
        z, mask = model_input(v, scaler.center, scaler.scale)
        values.append(z)
        masks.append(mask)
        train_starts.append(offset + _window_starts(p.scorable, 0, s, window))
        val_starts.append(offset + _window_starts(p.scorable, s, len(v), window))
        offset += len(v)
    data = WindowData(np.concatenate(values), np.concatenate(masks),
                      np.concatenate(train_starts), np.concatenate(val_starts))
    if data.train_starts.size == 0 or data.val_starts.size == 0:
        raise DataError(
            f"no {'training' if data.train_starts.size == 0 else 'validation'} window is observed enough to "
            f"learn from: a window is {window} {_rows_of(interval)}, and at "
            f"least {grid.min_observed:.0%} of its cells must be observed (readings far apart, long gaps or a "
            f"wrong --interval?)")
    vae, history, best_epoch = fit(config, data, len(sensors), progress)

    # calibrate on the validation windows, scored exactly as the detector will score them:
    # first each sensor's own error scale, then the threshold. The threshold is fitted to
    # cross-fitted scores (scoring.cross_fitted_scores: each half of the windows scored on the
    # scale measured on the other half), not to the scores the windows get on a scale measured
    # on themselves (cross_fit off, and models of the legacy rule without per-sensor scales: on
    # their own scores).
    model = TrainedModel(sensors, config.model, scaler, vae, Threshold(float("inf"), "uncalibrated"),
                         config.persistence, config.score_rule, interval, off_condition=config.off_condition,
                         off_settle_seconds=config.off_settle_seconds)
    scorer = model.scorer()
    calibration = None
    if not config.score_rule.legacy:
        errors = [_scored(p.scorable[s + window - 1:], *scorer.sensor_errors_series(v[s:]))
                  for v, s, p in zip(series, splits, placed)]
        errors, observed = np.concatenate([e for e, _ in errors]), np.concatenate([o for _, o in errors])
        model.scoring = calibrate_rule(config.score_rule, errors, observed)
        scorer = model.scorer()
        if config.cross_fit and len(errors) >= 4:
            calibration = cross_fitted_scores(config.score_rule, errors, observed)
    val_scores = np.concatenate([scorer.score_series(v[s:]).score[window - 1:][p.scorable[s + window - 1:]]
                                 for v, s, p in zip(series, splits, placed)])
    if calibration is None:
        calibration = val_scores
    train_scores = np.concatenate([scorer.score_series(v[:s]).score[window - 1:][p.scorable[window - 1:s]]
                                   for v, s, p in zip(series, splits, placed)])
    val_scores, calibration = val_scores[np.isfinite(val_scores)], calibration[np.isfinite(calibration)]
    try:
        model.threshold = calibrate(calibration, config.threshold_method, **config.threshold_options(interval))
        if config.threshold_method == "pot" and config.risk is None:
            model.threshold.details["per_day"] = config.per_day
    except ValueError as e:
        raise DataError(f"cannot calibrate the threshold on {calibration.size} validation windows of "
                        f"{window} {_rows_of(interval)} ({e}): more normal history, or a smaller --window") from None

    warm_up = _warm_up(model, tables) if model.off is not None else None
    missing = [float(np.mean(~np.isfinite(t.values), axis=0).max()) if t.rows else 0.0 for t in tables]
    summary = {
        "files": [t.path for t in tables],
        "rows": int(sum(t.rows for t in tables)),
        "train_windows": int(data.train_starts.size),
        "validation_windows": int(data.val_starts.size),
        "time_start": _iso(float(min(t.time[0] for t in tables))),
        "time_end": _iso(float(max(t.time[-1] for t in tables))),
        "max_missing_fraction": max(missing),
        "interval_seconds": interval,
        "interval_source": "given" if config.interval_seconds else "data",
        "sampling": sampling.to_dict(),
        "off_condition": config.off_condition,
        "off_rows": off_rows,
        "warm_up_seconds": warm_up,
        "suggested_off_settle_seconds": None if warm_up is None or warm_up <= config.off_settle_seconds else
        60.0 * math.ceil(WARM_UP_MARGIN * warm_up / 60.0 - 1e-9),
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "best_validation_loss": min((h.val_loss for h in history), default=None),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    model.metadata = {"training": summary, "train_config": config.to_dict()}
    report = {
        "summary": summary,
        "history": [h.__dict__ for h in history],
        "threshold": model.threshold.to_dict(),
        "validation_scores": _describe(val_scores),
        "calibration_scores": _describe(calibration),  # what the threshold was fitted to (cross-fitted)
        "train_scores": _describe(train_scores[np.isfinite(train_scores)]),
        "_calibration_scores": calibration,  # raw values for the plot; dropped from the JSON
        # each file's validation rows on the grid and which of their windows are scored, for
        # benchmarks/score_study.py (which measures their errors as calibration does)
        "_validation_rows": [(v[s:], p.scorable[s + window - 1:]) for v, s, p in zip(series, splits, placed)],
    }
    return model, report


def _describe(scores: np.ndarray) -> dict:
    if scores.size == 0:
        return {"count": 0}
    q = np.quantile(scores, [0.5, 0.9, 0.99, 0.999])
    return {"count": int(scores.size), "mean": float(scores.mean()), "median": float(q[0]),
            "p90": float(q[1]), "p99": float(q[2]), "p999": float(q[3]), "max": float(scores.max())}
