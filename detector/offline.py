"""Offline scoring of whole sensor tables and the scores CSV format.

scores.csv has exactly one row per input row, in input order:

    timestamp,score,threshold,is_anomaly,top_sensors,normalized_score

A row whose window is not full yet has an empty score and is_anomaly 0, and so has a row
left out because its time is not after the row before (csvdata.SkippedRows). top_sensors
names the three largest contributors as `name:share` joined by `|`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from detector.artifact import TrainedModel
from detector.csvdata import SensorTable
from detector.grid import Placed, place
from detector.scoring import Scorer, top_shares

HEADER = "timestamp,score,threshold,is_anomaly,top_sensors,normalized_score\n"
TOP_K = 3
CHUNK_ROWS = 1 << 16


@dataclass(frozen=True)
class TableScores:
    """Per-row results for one table: score, normalized (score / threshold): [rows] float32,
    NaN before the first full window; flags: [rows] bool; contributions: [rows, sensors]."""

    score: np.ndarray
    normalized: np.ndarray
    flags: np.ndarray
    contributions: np.ndarray


def score_chunks(model: TrainedModel, table: SensorTable, scorer: Scorer | None = None,
                 chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, TableScores]]:
    """Score a table in chunks of rows: yields (first row, results for the chunk's rows).

    The rows are put on the model's time grid (detector.grid) as the daemon puts an
    asset's readings, leaving out rows where the model's off condition holds: a row's
    score is that of the window ending at its interval, NaN where that window is not
    scored (not full, or mostly missing) and for an off row. Each chunk is scored
    with the rows before it as context, and the persistence rule (over scored rows only,
    as the daemon's alert tracker sees them, counting afresh from the first scored window of
    each run: after a gap or a stop) carries its last n-1 states over, so results equal
    scoring all at once.
    """
    scorer = scorer or model.scorer()
    window = model.config.window
    values = table.select(model.sensors)
    times = table.times_ms()
    kept = np.arange(table.rows) if model.off is None else np.flatnonzero(~model.off.off_rows(times, values))
    placed = place(times[kept], values[kept], model.grid)  # off readings: as if they had not come
    run_of = np.cumsum(placed.position == 0)[placed.slot]  # each kept row's run
    carry, carry_starts, last_run = np.zeros(0, bool), np.zeros(0, bool), -1
    threshold = np.float32(model.threshold.value)
    keep = model.persistence.n - 1
    for lo in range(0, table.rows, chunk_rows):
        hi = min(lo + chunk_rows, table.rows)
        a, b = np.searchsorted(kept, [lo, hi])
        score = np.full(hi - lo, np.nan, np.float32)
        contributions = np.zeros((hi - lo, len(model.sensors)), np.float32)
        runs = np.zeros(hi - lo, np.int64)
        if b > a:
            score[kept[a:b] - lo], contributions[kept[a:b] - lo] = _score_rows(scorer, placed, a, b, window)
            runs[kept[a:b] - lo] = run_of[a:b]
        normalized = score / threshold
        scored = np.isfinite(score)
        runs = runs[scored]
        starts = runs != np.r_[last_run, runs[:-1]]  # the first scored window of a run counts afresh
        over = np.concatenate([carry, normalized[scored] > 1.0])
        starts = np.concatenate([carry_starts, starts])
        flags = np.zeros(hi - lo, bool)
        flags[scored] = model.persistence.apply(over, starts)[carry.size:]
        if keep:
            carry, carry_starts = over[over.size - keep:], starts[starts.size - keep:]
        last_run = int(runs[-1]) if runs.size else last_run
        yield lo, TableScores(score, normalized, flags, contributions)


def _score_rows(scorer: Scorer, placed: Placed, lo: int, hi: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and contributions of readings lo..hi-1: their windows on the grid (NaN where not scored)."""
    slots = placed.slot[lo:hi]
    first, last = int(slots[0]), int(slots[-1]) + 1
    score = np.full(hi - lo, np.nan, np.float32)
    contributions = np.zeros((hi - lo, scorer.sensors), np.float32)
    wanted = placed.scorable[slots]
    if wanted.any():
        if last - first <= 2 * (hi - lo):  # the intervals hold about one reading each: score them all
            start = max(first - window + 1, 0)
            result = scorer.score_series(placed.rows[start:last])
            at = slots[wanted] - start
        else:  # sparse readings: the wanted windows only
            ends = np.unique(slots[wanted])
            result = scorer(placed.windows(ends, window))
            at = np.searchsorted(ends, slots[wanted])
        score[wanted] = result.score[at]
        contributions[wanted] = result.contributions[at]
    inside = (placed.partial >= lo) & (placed.partial < hi)
    if inside.any():  # readings followed by others in the same interval: their own windows
        score[placed.partial[inside] - lo] = np.nan
        contributions[placed.partial[inside] - lo] = 0.0
        ok = inside & placed.partial_scorable
        if ok.any():
            result = scorer(placed.windows_of_partial(window)[ok])
            score[placed.partial[ok] - lo] = result.score
            contributions[placed.partial[ok] - lo] = result.contributions
    return score, contributions


def score_table(model: TrainedModel, table: SensorTable, scorer: Scorer | None = None) -> TableScores:
    """Score every row of a table with the model (selecting its sensors by name)."""
    parts = [s for _, s in score_chunks(model, table, scorer)]
    if not parts:
        empty = np.empty(0, np.float32)
        return TableScores(empty, empty, np.empty(0, bool), np.empty((0, len(model.sensors)), np.float32))
    return TableScores(*(np.concatenate([getattr(p, f) for p in parts])
                         for f in ("score", "normalized", "flags", "contributions")))


def _share_labels(names: tuple[str, ...]) -> np.ndarray:
    """Lookup table [sensors, 101] of 'name:0.42' strings (shares rounded to 2 decimals)."""
    return np.array([[f"{n}:{p / 100:.2f}" for p in range(101)] for n in names], dtype=object)


def format_rows(time_raw: list[str], scores: TableScores, threshold: float, names: tuple[str, ...],
                skipped: Sequence[tuple[int, str]] = ()) -> str:
    """The CSV lines (no header) for one table's (or chunk's) results.

    skipped: (position, time cell) of rows left out for their time, in file order: each is
    written, with an empty score, after the row at that position of time_raw."""
    top, shares = top_shares(scores.contributions, scores.score, TOP_K)
    pct = np.clip(np.rint(shares * 100), 0, 100).astype(np.int64)
    labels = _share_labels(names)[top, pct]
    tops = ["|".join(t) for t in zip(*(labels[:, j].tolist() for j in range(top.shape[1])))]
    thr = f"{threshold:.6g}"
    times = [_csv_field(t) for t in time_raw] if _needs_quoting(time_raw) else time_raw
    lines = [
        f"{ts},{s:.6g},{thr},{f:d},{tp},{n:.4f}" if s == s else f"{ts},,{thr},0,,"
        for ts, s, f, tp, n in zip(times, scores.score.tolist(), scores.flags.astype(np.int8).tolist(), tops,
                                   scores.normalized.tolist())
    ]
    if skipped:
        merged, done = [], 0
        for position, raw in skipped:
            merged += lines[done:position + 1]
            merged.append(f"{_csv_field(raw)},,{thr},0,,")
            done = position + 1
        lines = merged + lines[done:]
    return "\n".join(lines) + "\n" if lines else ""


def _needs_quoting(texts: list[str]) -> bool:
    return any("," in t or '"' in t or "\n" in t or "\r" in t for t in texts)


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def score_tables(model: TrainedModel, tables: Iterable[SensorTable]) -> Iterator[tuple[SensorTable, TableScores]]:
    """Score tables one after another, reusing one compiled scorer."""
    scorer = model.scorer()
    for table in tables:
        yield table, score_table(model, table, scorer)


def _skipped_positions(table: SensorTable) -> tuple[np.ndarray, list[str]]:
    """For each row the table left out for its time: the position (among the kept rows) of
    the row it follows in the file, and its time cell."""
    if table.skipped is None:
        return np.empty(0, np.int64), []
    k = table.skipped.count
    return table.skipped.index - np.arange(k) - 1, table.skipped.time_raw


def write_scores(model: TrainedModel, tables: Iterable[SensorTable], out_path: str | os.PathLike) -> int:
    """Score tables and write one scores CSV, one line per row of the input files (rows left
    out for their time included, with an empty score); returns the number of rows written.

    Formatting a chunk overlaps with scoring the next one (JAX releases the GIL). The
    file appears under its name only when complete.
    """
    rows = 0
    threshold = model.threshold.value
    scorer = model.scorer()
    tmp = f"{out_path}.tmp"
    with open(tmp, "w", newline="") as f, ThreadPoolExecutor(max_workers=1) as pool:
        f.write(HEADER)
        pending = None
        for table in tables:
            after, skipped_raw = _skipped_positions(table)
            for lo, scores in score_chunks(model, table, scorer):
                if pending is not None:
                    f.write(pending.result())
                hi = lo + len(scores.score)
                here = np.flatnonzero((after >= lo) & (after < hi)).tolist()
                skipped = [(int(after[i]) - lo, skipped_raw[i]) for i in here]
                pending = pool.submit(format_rows, table.time_raw[lo:hi], scores, threshold, model.sensors, skipped)
                rows += hi - lo + len(skipped)
        if pending is not None:
            f.write(pending.result())
    os.replace(tmp, out_path)
    return rows
