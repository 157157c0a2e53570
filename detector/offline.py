"""Offline scoring of whole sensor tables and the scores CSV format.

scores.csv has exactly one row per input row, in input order:

    timestamp,score,threshold,is_anomaly,top_sensors,normalized_score

A row whose window is not full yet has an empty score and is_anomaly 0. top_sensors
names the three largest contributors as `name:share` joined by `|`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from detector.artifact import TrainedModel
from detector.csvdata import SensorTable
from detector.scoring import Scorer
from detector.threshold import flag

HEADER = "timestamp,score,threshold,is_anomaly,top_sensors,normalized_score\n"
TOP_K = 3


@dataclass(frozen=True)
class TableScores:
    """Per-row results for one table: score, normalized (score / threshold): [rows] float32,
    NaN before the first full window; flags: [rows] bool; contributions: [rows, sensors]."""

    score: np.ndarray
    normalized: np.ndarray
    flags: np.ndarray
    contributions: np.ndarray


def score_table(model: TrainedModel, table: SensorTable, scorer: Scorer | None = None) -> TableScores:
    """Score every row of a table with the model (selecting its sensors by name)."""
    scorer = scorer or model.scorer()
    result = scorer.score_series(table.select(model.sensors))
    normalized = result.score / np.float32(model.threshold.value)
    return TableScores(result.score, normalized, flag(normalized, 1.0, model.persistence), result.contributions)


def _share_labels(names: tuple[str, ...]) -> np.ndarray:
    """Lookup table [sensors, 101] of 'name:0.42' strings (shares rounded to 2 decimals)."""
    return np.array([[f"{n}:{p / 100:.2f}" for p in range(101)] for n in names], dtype=object)


def format_rows(time_raw: list[str], scores: TableScores, threshold: float, names: tuple[str, ...]) -> str:
    """The CSV lines (no header) for one table's results."""
    k = min(TOP_K, len(names))
    contributions = scores.contributions
    top = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
    total = np.where(scores.score > 0, scores.score, 1.0)[:, None]
    shares = np.take_along_axis(contributions, top, axis=1) / total
    pct = np.clip(np.rint(shares * 100), 0, 100).astype(np.int64)
    labels = _share_labels(names)[top, pct]
    scored = np.isfinite(scores.score)
    thr = f"{threshold:.6g}"
    out = io.StringIO()
    score_list = scores.score.tolist()
    norm_list = scores.normalized.tolist()
    flags = scores.flags.astype(np.int8).tolist()
    for i, ts in enumerate(time_raw):
        if scored[i]:
            out.write(f"{_csv_field(ts)},{score_list[i]:.6g},{thr},{flags[i]},{'|'.join(labels[i])},{norm_list[i]:.4f}\n")
        else:
            out.write(f"{_csv_field(ts)},,{thr},0,,\n")
    return out.getvalue()


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def score_tables(model: TrainedModel, tables: Iterable[SensorTable]) -> Iterator[tuple[SensorTable, TableScores]]:
    """Score tables one after another, reusing one compiled scorer."""
    scorer = model.scorer()
    for table in tables:
        yield table, score_table(model, table, scorer)


def write_scores(model: TrainedModel, tables: Iterable[SensorTable], out_path: str | os.PathLike) -> int:
    """Score tables and write one scores CSV; returns the number of rows written.

    Formatting one table overlaps with scoring the next (JAX releases the GIL).
    """
    rows = 0
    threshold = model.threshold.value
    tmp = f"{out_path}.tmp"
    with open(tmp, "w", newline="") as f, ThreadPoolExecutor(max_workers=1) as pool:
        f.write(HEADER)
        pending = None
        for table, scores in score_tables(model, tables):
            if pending is not None:
                f.write(pending.result())
            pending = pool.submit(format_rows, table.time_raw, scores, threshold, model.sensors)
            rows += len(table.time_raw)
        if pending is not None:
            f.write(pending.result())
    os.replace(tmp, out_path)
    return rows
