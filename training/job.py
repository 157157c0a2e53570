"""The training job: sensor tables in, a calibrated TrainedModel and its report out.

Each file is split in time: the first part of its rows trains, the last
`validation_fraction` validates (early stopping and threshold calibration). Windows
never cross a file boundary nor the train/validation boundary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import numpy as np

from detector.artifact import TrainedModel
from detector.csvdata import DataError, SensorTable
from detector.preprocessing import Scaler
from detector.sampling import infer_sampling
from detector.scoring import calibrate_rule
from detector.threshold import Threshold, calibrate
from training.config import TrainConfig
from training.train import EpochStats, WindowData, fit


def _split_rows(rows: int, window: int, fraction: float) -> int:
    """Index of the first validation row, or `rows` when the file is too short to split."""
    val_rows = max(int(round(rows * fraction)), window)
    if rows - val_rows < window:
        return rows
    return rows - val_rows


def _window_starts(offset: int, rows: int, window: int) -> np.ndarray:
    return np.arange(offset, offset + max(rows - window + 1, 0), dtype=np.int32)


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
    series = [t.select(sensors) for t in tables]
    splits = [_split_rows(len(v), window, config.validation_fraction) for v in series]
    train_rows = [v[:s] for v, s in zip(series, splits)]
    if not any(len(r) >= window for r in train_rows) or all(s == len(v) for v, s in zip(series, splits)):
        need = int(np.ceil(2 * window / min(config.validation_fraction, 1 - config.validation_fraction)))
        raise DataError(
            f"not enough rows to train with window {window}: the longest file has "
            f"{max(len(v) for v in series)} rows, need about {need} (or a smaller --window)"
        )
    scaler = Scaler.fit(np.concatenate(train_rows))
    values, masks, train_starts, val_starts = [], [], [], []
    offset = 0
    for v, s in zip(series, splits):
        mask = np.isfinite(v)
        z = np.where(mask, scaler.transform(v), 0.0).astype(np.float32)
        values.append(z)
        masks.append(mask.astype(np.float32))
        train_starts.append(_window_starts(offset, s, window))
        val_starts.append(_window_starts(offset + s, len(v) - s, window))
        offset += len(v)
    data = WindowData(np.concatenate(values), np.concatenate(masks),
                      np.concatenate(train_starts), np.concatenate(val_starts))
    vae, history, best_epoch = fit(config, data, len(sensors), progress)

    # calibrate on the validation windows, scored exactly as the detector will score them:
    # first each sensor's own error scale, then the threshold on the resulting scores
    sampling = infer_sampling([t.time for t in tables])
    interval = config.interval_seconds or sampling.interval_seconds
    model = TrainedModel(sensors, config.model, scaler, vae, Threshold(float("inf"), "uncalibrated"),
                         config.persistence, config.score_rule, interval)
    if not config.score_rule.legacy:
        raw = model.scorer()
        errors = [raw.sensor_errors_series(v[s:]) for v, s in zip(series, splits)]
        model.scoring = calibrate_rule(config.score_rule, np.concatenate([e for e, _ in errors]),
                                       np.concatenate([o for _, o in errors]))
    scorer = model.scorer()
    val_scores = np.concatenate([scorer.score_series(v[s:]).score[window - 1:] for v, s in zip(series, splits)])
    train_scores = np.concatenate([scorer.score_series(v[:s]).score[window - 1:] for v, s in zip(series, splits)])
    val_scores = val_scores[np.isfinite(val_scores)]
    model.threshold = calibrate(val_scores, config.threshold_method, **config.threshold_options())

    missing = [float(np.mean(~np.isfinite(v), axis=0).max()) if len(v) else 0.0 for v in series]
    summary = {
        "files": [t.path for t in tables],
        "rows": int(sum(len(v) for v in series)),
        "train_windows": int(data.train_starts.size),
        "validation_windows": int(data.val_starts.size),
        "time_start": _iso(float(min(t.time[0] for t in tables))),
        "time_end": _iso(float(max(t.time[-1] for t in tables))),
        "max_missing_fraction": max(missing),
        "interval_seconds": interval,
        "interval_source": "given" if config.interval_seconds else "data",
        "sampling": sampling.to_dict(),
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
        "train_scores": _describe(train_scores[np.isfinite(train_scores)]),
        "_validation_scores": val_scores,  # raw values for the plot; dropped from the JSON
    }
    return model, report


def _describe(scores: np.ndarray) -> dict:
    if scores.size == 0:
        return {"count": 0}
    q = np.quantile(scores, [0.5, 0.9, 0.99, 0.999])
    return {"count": int(scores.size), "mean": float(scores.mean()), "median": float(q[0]),
            "p90": float(q[1]), "p99": float(q[2]), "p999": float(q[3]), "max": float(scores.max())}
