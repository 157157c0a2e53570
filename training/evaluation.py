"""Detection metrics for a scored series: point-wise, threshold-free and event-wise.

All functions are pure numpy and vectorised (a 1,000,000-row series evaluates in well
under a second). Conventions used throughout:

- Row arrays have shape [n]: `labels` (0/1 ground truth), `scores` (float, NaN where no
  score exists, e.g. before the first window is full), `flags` (0/1 predicted alarms).
- A row with a NaN score is *unscored*: it is never flagged (its flag is treated as 0)
  and it is left out of the threshold-free metrics. It still counts in the point-wise
  confusion matrix (as a non-alarm) and its label still shapes the events.
- An *event* is a maximal run of consecutive rows labelled 1. When several series are
  concatenated, `segments` (the start index of each series) splits runs at those
  indices, so events and alarm episodes never span two series.
- A metric whose denominator is zero is returned as None (JSON null), never NaN.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["average_precision", "evaluate", "roc_auc", "runs"]


# ----------------------------------------------------------------------------- inputs


def _binary(name: str, values: ArrayLike) -> np.ndarray:
    """A 1-D 0/1 (or bool) array -> bool [n]; anything else is a ValueError."""
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.dtype == np.bool_:
        return a
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must be 0/1 numbers or booleans, got dtype {a.dtype}")
    is_one = a == 1
    if not (is_one | (a == 0)).all():
        bad = np.unique(a[~(is_one | (a == 0))])[:5].tolist()
        raise ValueError(f"{name} must contain only 0 and 1, found {bad}")
    return is_one


def _float_1d(name: str, values: ArrayLike) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _check_lengths(**arrays: np.ndarray) -> int:
    """Common length of the given [n] arrays; a ValueError naming every length otherwise."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"arrays must have equal lengths: {listed}")
    return next(iter(lengths.values()))


def _segment_starts(segments: ArrayLike | None, n: int) -> np.ndarray:
    """Validated segment start indices -> sorted unique int64 [k], all in [0, n]."""
    if segments is None:
        return np.empty(0, np.int64)
    s = np.asarray(segments)
    if s.ndim != 1:
        raise ValueError(f"segments must be a 1-D array of start indices, got shape {s.shape}")
    if s.size == 0:
        return np.empty(0, np.int64)
    if not np.issubdtype(s.dtype, np.integer):
        raise ValueError(f"segments must be integer start indices, got dtype {s.dtype}")
    if s.min() < 0 or s.max() > n:
        raise ValueError(f"segment starts must lie in [0, {n}], got min {s.min()} and max {s.max()}")
    return np.unique(s.astype(np.int64))


# ----------------------------------------------------------------------------- runs


def runs(mask: ArrayLike, segments: ArrayLike | None = None) -> np.ndarray:
    """Contiguous runs of True in a 1-D mask.

    mask: [n] bool (or 0/1). segments: optional [k] int start indices of concatenated
    series; a run that crosses one of them is split there (0 and n may be included and
    change nothing).
    Returns int64 [runs, 2]: (start, stop) with stop exclusive, in increasing order.
    A run touching the end of the array has stop == n.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 1:
        raise ValueError(f"mask must be 1-D, got shape {m.shape}")
    n = m.size
    edges = np.diff(m.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    cuts = _segment_starts(segments, n)
    if cuts.size:
        # A cut inside a run (row before and row at the cut both True) ends one run
        # and starts the next; it is neither a start nor a stop already.
        cuts = cuts[(cuts > 0) & (cuts < n)]
        cuts = cuts[m[cuts] & m[cuts - 1]]
        starts = np.sort(np.concatenate([starts, cuts]))
        stops = np.sort(np.concatenate([stops, cuts]))
    return np.stack([starts, stops], axis=1).astype(np.int64).reshape(-1, 2)


# ----------------------------------------------------------------------------- threshold-free


def _check_ranked(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = _binary("labels", labels)
    s = _float_1d("scores", scores)
    _check_lengths(labels=y, scores=s)
    if np.isnan(s).any():
        raise ValueError("scores must not contain NaN: filter out unscored rows first")
    return y, s


def _tie_groups(sorted_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tie groups of an ascending [n] array: (first index [g], stop index [g])."""
    n = sorted_scores.size
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    first = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    stop = np.append(first[1:], n)
    return first, stop


def _roc_auc_sorted(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC-AUC from labels y [n] bool and scores s [n], both sorted by ascending score."""
    n_pos = int(np.count_nonzero(y))
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    first, stop = _tie_groups(s)
    # Average 1-based rank of a tie group spanning sorted positions first..stop-1 is
    # (first + 1 + stop) / 2; work with twice the rank so everything stays an exact integer.
    group_of_row = np.repeat(np.arange(first.size), stop - first)
    twice_rank = (first + stop + 1)[group_of_row]
    twice_rank_sum = int(twice_rank[y].sum())
    # Mann-Whitney U = R_pos - n_pos (n_pos + 1) / 2, AUC = U / (n_pos n_neg).
    twice_u = twice_rank_sum - n_pos * (n_pos + 1)
    return twice_u / (2 * n_pos * n_neg)


def _average_precision_sorted(y: np.ndarray, s: np.ndarray) -> float | None:
    """Average precision from labels y [n] bool and scores s [n], sorted by ascending score."""
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        return None
    # Thresholds run from the highest distinct score down; at a threshold every row
    # scoring >= it is flagged, i.e. the rows from a tie group's first index to the end.
    first, _ = _tie_groups(s)
    positives_above = np.cumsum(y[::-1])[::-1]  # [n]: positives at sorted index >= i
    tp = positives_above[first][::-1].astype(np.float64)  # [g], threshold descending
    flagged = (s.size - first)[::-1].astype(np.float64)
    precision = tp / flagged
    recall_step = np.diff(tp, prepend=0.0) / n_pos
    return float(np.sum(recall_step * precision))


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """Threshold-free ROC-AUC (Mann-Whitney U with average ranks for ties).

    labels: [n] 0/1; scores: [n] float without NaN (+-inf rank as extremes).
    Returns the probability that a random positive outscores a random negative (ties
    count one half), or None when only one class is present.
    """
    y, s = _check_ranked(labels, scores)
    order = np.argsort(s, kind="stable")
    return _roc_auc_sorted(y[order], s[order])


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """Average precision, as sklearn.metrics.average_precision_score.

    labels: [n] 0/1; scores: [n] float without NaN. AP = sum_k (R_k - R_{k-1}) P_k over
    the distinct scores taken as thresholds in decreasing order (rows with score >= the
    threshold are flagged, so tied rows enter together), with R_0 = 0.
    Returns None when there is no positive.
    """
    y, s = _check_ranked(labels, scores)
    order = np.argsort(s, kind="stable")
    return _average_precision_sorted(y[order], s[order])


# ----------------------------------------------------------------------------- evaluate


def _ratio(num: int | float, den: int | float) -> float | None:
    return float(num / den) if den else None


def evaluate(
    labels: ArrayLike,
    scores: ArrayLike,
    flags: ArrayLike,
    *,
    timestamps: ArrayLike | None = None,
    segments: ArrayLike | None = None,
    pa_k: float = 0.2,
) -> dict[str, float | int | None]:
    """Point-wise and event-wise detection metrics for one or more concatenated series.

    labels: [n] 0/1 ground truth.
    scores: [n] float, NaN where no score exists (e.g. window not yet full).
    flags: [n] 0/1 predicted alarms; rows with a NaN score are never flagged (treated as 0).
    timestamps: optional [n] finite float seconds, used to report the detection delay in
        seconds too.
    segments: optional [k] int start indices of the series that were concatenated into
        these arrays (e.g. [0, len(file0), len(file0) + len(file1)]). Events and false
        alarm episodes are split at these indices, so they never span two series.

    Returns a JSON-serialisable dict of plain ints/floats, None where undefined:
    rows, scored_rows, positives, tp, fp, tn, fn (point-wise over all rows),
    precision, recall, f1 (= 2tp / (2tp + fp + fn)), false_alarm_rate (fp / (fp + tn)),
    missed_alarm_rate (fn / (fn + tp)), roc_auc and average_precision (over scored rows),
    events, events_detected, event_recall, point_adjusted_f1, pa_k_f1 (point adjustment only for
    events with at least a share pa_k of their rows flagged: PA%K, Kim et al., AAAI 2022),
    mean_detection_delay_rows, mean_detection_delay_seconds, false_alarm_episodes.
    """
    y = _binary("labels", labels)
    s = _float_1d("scores", scores)
    f = _binary("flags", flags)
    t = None if timestamps is None else _float_1d("timestamps", timestamps)
    arrays = {"labels": y, "scores": s, "flags": f} | ({} if t is None else {"timestamps": t})
    n = _check_lengths(**arrays)
    if t is not None and not np.isfinite(t).all():
        raise ValueError("timestamps must be finite")
    cuts = _segment_starts(segments, n)

    scored = ~np.isnan(s)
    f = f & scored

    # Point-wise confusion matrix over all rows.
    positives = int(np.count_nonzero(y))
    flagged = int(np.count_nonzero(f))
    tp = int(np.count_nonzero(y & f))
    fp = flagged - tp
    fn = positives - tp
    tn = n - tp - fp - fn

    # Threshold-free metrics over scored rows, sharing one sort.
    ys, ss = y[scored], s[scored]
    order = np.argsort(ss, kind="stable")
    ys, ss = ys[order], ss[order]

    # Events: runs of label 1. The first flagged row at or after an event's start
    # (searchsorted into the flagged indices) detects it if it lies before its stop.
    events = runs(y, cuts)
    flag_idx = np.flatnonzero(f)
    nxt = np.searchsorted(flag_idx, events[:, 0])
    first_flag = np.append(flag_idx, n)[nxt]
    detected = first_flag < events[:, 1]
    det_events, det_first = events[detected], first_flag[detected]

    # Point adjust: every row of a detected event counts as a true positive.
    flags_before = np.concatenate([[0], np.cumsum(f, dtype=np.int64)])
    flagged_inside = flags_before[det_events[:, 1]] - flags_before[det_events[:, 0]]
    adjusted = int(np.sum(det_events[:, 1] - det_events[:, 0] - flagged_inside))
    pa_tp, pa_fn = tp + adjusted, fn - adjusted
    # PA%K (Kim et al., AAAI 2022): an event counts whole only where at least K of its rows are flagged.
    share = flagged_inside / np.maximum(det_events[:, 1] - det_events[:, 0], 1)
    adjusted_k = int(np.sum((det_events[:, 1] - det_events[:, 0] - flagged_inside)[share >= pa_k]))
    pak_tp, pak_fn = tp + adjusted_k, fn - adjusted_k

    # False alarm episodes: runs of flags without a single labelled-anomalous row.
    episodes = runs(f, cuts)
    labels_before = np.concatenate([[0], np.cumsum(y, dtype=np.int64)])
    false_episodes = int(np.count_nonzero(labels_before[episodes[:, 1]] == labels_before[episodes[:, 0]]))

    n_detected = int(det_events.shape[0])
    delay_rows = float(np.mean(det_first - det_events[:, 0])) if n_detected else None
    delay_seconds = (
        float(np.mean(t[det_first] - t[det_events[:, 0]])) if n_detected and t is not None else None
    )

    return {
        "rows": n,
        "scored_rows": int(np.count_nonzero(scored)),
        "positives": positives,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "false_alarm_rate": _ratio(fp, fp + tn),
        "missed_alarm_rate": _ratio(fn, fn + tp),
        "roc_auc": _roc_auc_sorted(ys, ss),
        "average_precision": _average_precision_sorted(ys, ss),
        "events": int(events.shape[0]),
        "events_detected": n_detected,
        "event_recall": _ratio(n_detected, events.shape[0]),
        "point_adjusted_f1": _ratio(2 * pa_tp, 2 * pa_tp + fp + pa_fn),
        "pa_k_f1": _ratio(2 * pak_tp, 2 * pak_tp + fp + pak_fn),
        "mean_detection_delay_rows": delay_rows,
        "mean_detection_delay_seconds": delay_seconds,
        "false_alarm_episodes": false_episodes,
    }


def evaluate_model(model, tables) -> dict[str, float | int | None]:
    """evaluate() for a model on labelled tables (detector.table.SensorTable), each scored as
    its own series."""
    from detector.offline import score_tables

    # what the metrics need of each table, not the table: tables may come one at a time
    parts = [(t.labels, s.normalized, s.flags, t.time) for t, s in score_tables(model, tables)]
    labels, normalized, flags, times = (np.concatenate(column) for column in zip(*parts))
    rows = [len(p[0]) for p in parts]
    return evaluate(labels, normalized, flags, timestamps=times, segments=np.cumsum([0] + rows[:-1]))
