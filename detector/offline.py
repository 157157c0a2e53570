"""Offline scoring of whole sensor tables and the scores file (CSV or Parquet).

The scores file has exactly one row per input row, in input order:

    timestamp,score,threshold,is_anomaly,top_sensors,normalized_score

A row whose window is not full yet has an empty score and is_anomaly 0, and so has a row
left out because its time is not after the row before (table.SkippedRows). top_sensors
names the three largest contributors as `name:share` joined by `|`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from detector.artifact import TrainedModel
from detector.table import SensorTable
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
    run_of = placed.runs()  # each kept row's run
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


def _share_labels(names: tuple[str, ...]) -> list[str]:
    """'name:0.42' for every sensor and share in hundredths: entry sensor * 101 + percent."""
    return [f"{n}:{p / 100:.2f}" for n in names for p in range(101)]


def _significant(x: np.ndarray, digits: int) -> np.ndarray:
    """x rounded to `digits` significant digits (float64; NaN stays NaN), printed short."""
    x = np.asarray(x, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(x))))
        out = np.round(x * scale) / scale
    return np.where(np.isfinite(out), out, x)


def _schema():
    import pyarrow as pa

    return pa.schema([("timestamp", pa.string()), ("score", pa.float64()), ("threshold", pa.float64()),
                      ("is_anomaly", pa.int8()), ("top_sensors", pa.string()), ("normalized_score", pa.float64())])


def score_columns(time_raw: Sequence[str], scores: TableScores, threshold: float, names: tuple[str, ...],
                  skipped: Sequence[tuple[int, str]] = ()):
    """One table's (or chunk's) results as an Arrow table with the columns of HEADER: score
    to 6 significant digits, normalized_score to 4 decimals, empty (null) where not scored.

    skipped: (position, time cell) of rows left out for their time, in file order: each comes,
    with an empty score, after the row at that position of time_raw."""
    import pyarrow as pa
    import pyarrow.compute as pc

    at = np.array([p + 1 for p, _ in skipped], np.int64)
    row = np.insert(np.arange(len(scores.score)), at, -1)  # each line's row of the chunk (-1: a skipped row)
    src = np.maximum(row, 0)
    missing = (row < 0) | ~np.isfinite(scores.score[src])
    top, shares = top_shares(scores.contributions[src], scores.score[src], TOP_K)
    pct = np.clip(np.rint(shares * 100), 0, 100).astype(np.int32)
    labels = pa.array(_share_labels(names))
    parts = [pa.DictionaryArray.from_arrays(pa.array(top[:, j] * 101 + pct[:, j], pa.int32()), labels)
             .cast(pa.string()) for j in range(top.shape[1])]
    tops = pc.binary_join_element_wise(*parts, "|") if len(parts) > 1 else parts[0]
    timestamp = np.insert(np.asarray(time_raw, dtype=object), at, np.array([r for _, r in skipped], dtype=object))
    return pa.table([
        pa.array(timestamp, pa.string()),
        pa.array(_significant(scores.score[src], 6), pa.float64(), mask=missing),
        pa.array(np.full(len(row), _significant(np.array([threshold]), 6)[0]), pa.float64()),
        pa.array(np.where(missing, 0, scores.flags[src]).astype(np.int8), pa.int8()),
        pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), tops),
        pa.array(np.round(scores.normalized[src].astype(np.float64), 4), pa.float64(), mask=missing),
    ], schema=_schema())


class ScoresWriter:
    """scores.csv (or scores.parquet, by the suffix) written a chunk at a time; the file
    appears under its name only when complete (close())."""

    def __init__(self, out_path: str | os.PathLike):
        self.path = str(out_path)
        self.tmp = f"{self.path}.tmp"
        self.parquet = self.path.lower().endswith(".parquet")
        self._writer = None
        self._file = None
        self.rows = 0

    def write(self, table) -> None:
        import pyarrow.compute as pc

        if self.parquet:
            self._parquet().write_table(table)
        else:
            from pyarrow import csv as pa_csv

            plain = not any(pc.any(pc.match_substring_regex(table.column(c), '[,"\r\n]')).as_py()
                            for c in ("timestamp", "top_sensors"))
            pa_csv.write_csv(table, self._csv(), pa_csv.WriteOptions(
                include_header=False, quoting_style="none" if plain else "needed"))
        self.rows += table.num_rows

    def _parquet(self):
        if self._writer is None:
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(self.tmp, _schema())
        return self._writer

    def _csv(self):
        if self._file is None:
            self._file = open(self.tmp, "wb")
            self._file.write(HEADER.encode())
        return self._file

    def close(self) -> None:
        """Finish the file (its header or columns even without rows) and give it its name."""
        (self._parquet() if self.parquet else self._csv()).close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def score_tables(model: TrainedModel, tables: Iterable[SensorTable]) -> Iterator[tuple[SensorTable, TableScores]]:
    """Score tables one after another, reusing one compiled scorer."""
    scorer = model.scorer()
    for table in tables:
        yield table, score_table(model, table, scorer)


@dataclass
class ScoresSummary:
    """What a scores file holds, counted while it is written: rows written, rows scored, rows
    flagged, the stretches of flagged rows (runs of consecutive flagged rows of one file),
    the files with a flagged row, and per sensor how many stretches it led (the largest
    contributor at a stretch's first row)."""

    sensors: tuple[str, ...]
    rows: int = 0
    scored: int = 0
    flagged: int = 0
    stretches: int = 0
    files: int = 0
    files_flagged: int = 0
    led: dict[str, int] = field(default_factory=dict)
    _last: bool = False  # the current file's last row so far was flagged
    _in_file: int = 0  # rows flagged in the current file

    def start_file(self) -> None:
        self.files += 1
        self._last, self._in_file = False, 0

    def add(self, scores: TableScores) -> None:
        """The next chunk of rows of the current file."""
        flags = scores.flags
        self.scored += int(np.count_nonzero(np.isfinite(scores.score)))
        flagged = int(np.count_nonzero(flags))
        if flagged and not self._in_file:
            self.files_flagged += 1
        self.flagged += flagged
        self._in_file += flagged
        starts = np.flatnonzero(flags & ~np.r_[self._last, flags[:-1]])
        self.stretches += len(starts)
        for j in np.argmax(scores.contributions[starts], axis=1):
            self.led[self.sensors[j]] = self.led.get(self.sensors[j], 0) + 1
        if len(flags):
            self._last = bool(flags[-1])

    def describe(self) -> str:
        """'1,234 rows flagged (0.12 % of 999,941 scored) in 5 stretches, in 2 of 18 files; led by vibration_x (3), current (2)'."""
        if not self.flagged:
            return f"no row flagged (of {self.scored:,} scored)"
        share = self.flagged / max(self.scored, 1)
        text = (f"{self.flagged:,} row{'s' if self.flagged != 1 else ''} flagged ({share:.2%} of {self.scored:,} "
                f"scored) in {self.stretches:,} stretch{'es' if self.stretches != 1 else ''}")
        if self.files > 1:
            text += f", in {self.files_flagged:,} of {self.files:,} files"
        leaders = sorted(self.led.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ", ".join(f"{name} ({n:,})" for name, n in leaders[:5])
        return text + f"; led by {shown}" + (f" and {len(leaders) - 5} more sensors" if len(leaders) > 5 else "")


def write_scores(model: TrainedModel, tables: Iterable[SensorTable], out_path: str | os.PathLike) -> ScoresSummary:
    """Score tables and write one scores file (CSV, or Parquet when out_path ends in
    .parquet), one row per row of the input files (rows left out for their time included,
    with an empty score); returns what it holds (ScoresSummary: .rows rows written).

    Writing a chunk overlaps with scoring the next one (JAX and Arrow release the GIL).
    """
    threshold = model.threshold.value
    scorer = model.scorer()
    out = ScoresWriter(out_path)
    summary = ScoresSummary(tuple(model.sensors))
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            for table in tables:
                summary.start_file()
                skipped_rows = table.skipped
                after = np.empty(0, np.int64) if skipped_rows is None else skipped_rows.follows()
                for lo, scores in score_chunks(model, table, scorer):
                    hi = lo + len(scores.score)
                    here = np.flatnonzero((after >= lo) & (after < hi)).tolist()
                    skipped = [(int(after[i]) - lo, skipped_rows.time_raw[i]) for i in here]
                    columns = score_columns(table.time_raw[lo:hi], scores, threshold, model.sensors, skipped)
                    summary.add(scores)
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(out.write, columns)
            if pending is not None:
                pending.result()
        out.close()
    except BaseException:
        out.abort()
        raise
    summary.rows = out.rows
    return summary
