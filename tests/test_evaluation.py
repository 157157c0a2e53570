"""Tests of training.evaluation on small hand-computed series."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from training.evaluation import average_precision, evaluate, roc_auc, runs

NAN = float("nan")


def assert_metrics(result: dict, expected: dict) -> None:
    """Every expected key matches exactly (floats to 1e-12, None stays None)."""
    for key, want in expected.items():
        got = result[key]
        if want is None or isinstance(want, int):
            assert got == want and type(got) is type(want), f"{key}: got {got!r}, want {want!r}"
        else:
            assert isinstance(got, float) and got == pytest.approx(want, abs=1e-12), f"{key}: got {got!r}, want {want!r}"


# ----------------------------------------------------------------------------- runs


@pytest.mark.parametrize(
    ("mask", "segments", "expected"),
    [
        ([0, 1, 1, 0, 1], None, [[1, 3], [4, 5]]),  # second run touches the end: stop == n
        ([1, 1, 1], None, [[0, 3]]),
        ([0, 0, 0], None, []),
        ([], None, []),
        ([0, 1, 1, 1], [2], [[1, 2], [2, 4]]),  # cut inside a run splits it
        ([1, 1, 0, 1], [0, 2, 3, 4], [[0, 2], [3, 4]]),  # cuts at run edges / array ends change nothing
        ([1, 1, 1, 1], [3, 1], [[0, 1], [1, 3], [3, 4]]),  # unsorted cuts
    ],
)
def test_runs(mask, segments, expected):
    got = runs(np.array(mask, dtype=bool), segments)
    assert got.shape == (len(expected), 2)
    assert got.tolist() == expected


def test_runs_rejects_out_of_range_segments():
    with pytest.raises(ValueError, match="segment"):
        runs([1, 1], segments=[3])


# ----------------------------------------------------------------------------- threshold-free


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        # all scores equal: every (pos, neg) pair is a tie worth 1/2
        ([0, 1, 0, 1, 1], [2.0, 2.0, 2.0, 2.0, 2.0], 0.5),
        # pairs (pos, neg): (0.35, 0.1)=1 (0.35, 0.4)=0 (0.8, 0.1)=1 (0.8, 0.4)=1 -> 3/4
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
        # pos {1, 3}, neg {1, 2}: (1,1)=1/2 (1,2)=0 (3,1)=1 (3,2)=1 -> 2.5/4
        # (ranks 1.5, 1.5, 3, 4; R_pos = 1.5 + 4 = 5.5; U = 5.5 - 3 = 2.5)
        ([0, 1, 0, 1], [1.0, 1.0, 2.0, 3.0], 0.625),
        ([1, 1, 0, 0], [0.0, 0.0, 1.0, 1.0], 0.0),  # perfectly wrong
        ([0, 1], [1.0, math.inf], 1.0),  # +inf is just the highest score
    ],
)
def test_roc_auc(labels, scores, expected):
    assert roc_auc(labels, scores) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1], []])
def test_roc_auc_one_class_is_none(labels):
    assert roc_auc(labels, np.arange(len(labels), dtype=float)) is None


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        # thresholds 0.8: P=1/1 R=1/2 | 0.4: P=1/2 R=1/2 | 0.35: P=2/3 R=1 | 0.1: P=2/4 R=1
        # AP = (1/2 - 0) * 1 + 0 * 1/2 + (1 - 1/2) * 2/3 + 0 = 5/6
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 5 / 6),
        # ties enter together: thresholds 3: rows {0,1} P=1/2 R=1/3 | 2: P=2/3 R=2/3 | 1: P=3/5 R=1
        # AP = 1/3 * 1/2 + 1/3 * 2/3 + 1/3 * 3/5 = 53/90 (an optimistic tie order would give more)
        ([1, 0, 1, 0, 1], [3.0, 3.0, 2.0, 1.0, 1.0], 53 / 90),
        # one threshold flags everything: P = 1/4, R = 1
        ([1, 0, 0, 0], [1.0, 1.0, 1.0, 1.0], 0.25),
        ([1, 1], [0.3, 0.1], 1.0),  # no negatives: precision is always 1
        ([0, 1, 1], [0.9, 0.5, 0.1], (1 / 2) * (1 / 2) + (1 / 2) * (2 / 3)),  # P@2 = 1/2, P@3 = 2/3
    ],
)
def test_average_precision(labels, scores, expected):
    assert average_precision(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_average_precision_without_positives_is_none():
    assert average_precision([0, 0, 0], [0.1, 0.2, 0.3]) is None


@pytest.mark.parametrize("seed", range(5))
def test_threshold_free_metrics_match_definitions_on_random_ties(seed):
    """Against the textbook definitions: pair counting for AUC, a loop over thresholds for AP."""
    rng = np.random.default_rng(seed)
    n = 60
    labels = (rng.random(n) < 0.3).astype(int)
    labels[:2] = [0, 1]
    scores = rng.integers(0, 6, n).astype(float) + labels  # few distinct values: many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    want_auc = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    want_ap, last_recall = 0.0, 0.0
    for threshold in np.unique(scores)[::-1]:
        flagged = scores >= threshold
        tp = np.sum(flagged & (labels == 1))
        recall = tp / labels.sum()
        want_ap += (recall - last_recall) * tp / flagged.sum()
        last_recall = recall
    assert roc_auc(labels, scores) == pytest.approx(want_auc, abs=1e-12)
    assert average_precision(labels, scores) == pytest.approx(want_ap, abs=1e-12)


@pytest.mark.parametrize("metric", [roc_auc, average_precision])
def test_threshold_free_metrics_reject_nan_scores(metric):
    with pytest.raises(ValueError, match="NaN"):
        metric([0, 1], [0.5, NAN])


# ----------------------------------------------------------------------------- evaluate

LABELS = [0, 0, 1, 1, 0, 1, 0]
SCORES = [0.1, 0.2, 0.9, 0.8, 0.3, 0.7, 0.1]  # every positive outscores every negative


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param(
            LABELS,
            # events [2, 4) and [5, 6), both flagged from their first row
            {"tp": 3, "fp": 0, "tn": 4, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0,
             "false_alarm_rate": 0.0, "missed_alarm_rate": 0.0, "events": 2, "events_detected": 2,
             "event_recall": 1.0, "point_adjusted_f1": 1.0, "mean_detection_delay_rows": 0.0,
             "false_alarm_episodes": 0},
            id="perfect",
        ),
        pytest.param(
            [0] * 7,
            # nothing flagged: precision undefined, f1 = 2*0 / (0 + 0 + 3) = 0
            {"tp": 0, "fp": 0, "tn": 4, "fn": 3, "precision": None, "recall": 0.0, "f1": 0.0,
             "false_alarm_rate": 0.0, "missed_alarm_rate": 1.0, "events": 2, "events_detected": 0,
             "event_recall": 0.0, "point_adjusted_f1": 0.0, "mean_detection_delay_rows": None,
             "false_alarm_episodes": 0},
            id="all-zero",
        ),
        pytest.param(
            [1] * 7,
            # everything flagged: tp 3, fp 4; f1 = 6 / (6 + 4 + 0) = 0.6; one episode with anomalies in it
            {"tp": 3, "fp": 4, "tn": 0, "fn": 0, "precision": 3 / 7, "recall": 1.0, "f1": 0.6,
             "false_alarm_rate": 1.0, "missed_alarm_rate": 0.0, "events": 2, "events_detected": 2,
             "event_recall": 1.0, "point_adjusted_f1": 0.6, "mean_detection_delay_rows": 0.0,
             "false_alarm_episodes": 0},
            id="all-one",
        ),
    ],
)
def test_evaluate_reference_detectors(flags, expected):
    result = evaluate(LABELS, SCORES, flags)
    # the scores are the same in every case: the threshold-free metrics do not depend on flags
    assert_metrics(result, expected | {"rows": 7, "scored_rows": 7, "positives": 3, "roc_auc": 1.0,
                                       "average_precision": 1.0, "mean_detection_delay_seconds": None})


def test_evaluate_point_adjust():
    labels = [0, 1, 1, 1, 1, 0, 0, 1, 1, 0]  # events [1, 5) and [7, 9)
    flags = [0, 0, 0, 1, 0, 0, 1, 0, 0, 0]  # hits row 3 of the first event, row 6 is a false alarm
    result = evaluate(labels, np.zeros(10), flags)
    # point-wise: tp = 1 (row 3), fp = 1 (row 6), fn = 6 - 1 = 5, tn = 10 - 7 = 3
    #   f1 = 2 / (2 + 1 + 5) = 1/4
    # point-adjusted: the whole first event counts: tp = 4, fp = 1, fn = 2 (second event)
    #   f1 = 8 / (8 + 1 + 2) = 8/11
    assert_metrics(result, {
        "tp": 1, "fp": 1, "tn": 3, "fn": 5, "f1": 0.25, "precision": 0.5, "recall": 1 / 6,
        "point_adjusted_f1": 8 / 11, "events": 2, "events_detected": 1, "event_recall": 0.5,
        "mean_detection_delay_rows": 2.0,  # first flag at 3, event starts at 1
        "false_alarm_episodes": 1,  # the run [6, 7)
        "roc_auc": 0.5, "average_precision": 0.6,  # all scores tie: AP = fraction of positives
    })


@pytest.mark.parametrize(
    ("timestamps", "delay_seconds"),
    [
        (None, None),
        # delays: t[2] - t[1] = 11 - 10 = 1 and t[9] - t[6] = 60 - 40 = 20 -> mean 10.5
        ([0.0, 10.0, 11.0, 15.0, 20.0, 30.0, 40.0, 41.0, 47.0, 60.0], 10.5),
    ],
)
def test_evaluate_detection_delay(timestamps, delay_seconds):
    labels = [0, 1, 1, 1, 0, 0, 1, 1, 1, 1]  # events [1, 4) and [6, 10) (touches the end)
    flags = [0, 0, 1, 0, 0, 0, 0, 0, 0, 1]  # first flags inside: 2 and 9
    result = evaluate(labels, np.ones(10), flags, timestamps=timestamps)
    # delays in rows: 2 - 1 = 1 and 9 - 6 = 3 -> mean 2
    assert_metrics(result, {"events": 2, "events_detected": 2, "mean_detection_delay_rows": 2.0,
                            "mean_detection_delay_seconds": delay_seconds})


def test_evaluate_false_alarm_episodes():
    labels = [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    flags = [1, 1, 0, 1, 1, 1, 0, 1, 0, 1]
    # flag runs: [0, 2) no anomaly -> false; [3, 6) contains row 3 -> not false;
    #            [7, 8) -> false; [9, 10) touches the end -> false
    result = evaluate(labels, np.zeros(10), flags)
    assert_metrics(result, {"false_alarm_episodes": 3, "tp": 1, "fp": 6, "fn": 1, "tn": 2,
                            "false_alarm_rate": 0.75, "mean_detection_delay_rows": 1.0})


def test_evaluate_alarm_right_after_an_event_is_a_false_alarm():
    labels = [0, 1, 1, 0, 0]  # event [1, 3)
    flags = [0, 0, 0, 1, 0]  # first alarm at the event's (exclusive) stop: too late
    result = evaluate(labels, np.zeros(5), flags)
    assert_metrics(result, {"events": 1, "events_detected": 0, "event_recall": 0.0, "point_adjusted_f1": 0.0,
                            "mean_detection_delay_rows": None, "false_alarm_episodes": 1})


def test_evaluate_nan_scores_are_never_flagged():
    labels = [1, 1, 0, 0, 1]
    scores = [NAN, NAN, 0.2, 0.1, 0.9]
    flags = [1, 1, 0, 0, 1]  # the flags on the unscored rows 0 and 1 must be ignored
    result = evaluate(labels, scores, flags)
    # effective flags [0, 0, 0, 0, 1]: tp 1, fp 0, fn 2, tn 2; event [0, 2) missed, [4, 5) hit
    # threshold-free over rows 2..4 only: labels [0, 0, 1], the positive scores highest
    assert_metrics(result, {"rows": 5, "scored_rows": 3, "positives": 3, "tp": 1, "fp": 0, "fn": 2,
                            "tn": 2, "events": 2, "events_detected": 1, "event_recall": 0.5,
                            "roc_auc": 1.0, "average_precision": 1.0, "false_alarm_episodes": 0,
                            "mean_detection_delay_rows": 0.0})


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        pytest.param(
            [0, 0, 0, 0], [0.1, 0.9, 0.8, 0.2],
            {"roc_auc": None, "average_precision": None, "recall": None, "missed_alarm_rate": None,
             "events": 0, "event_recall": None, "mean_detection_delay_rows": None,
             "precision": 0.0, "f1": 0.0, "point_adjusted_f1": 0.0, "false_alarm_rate": 0.5,
             "false_alarm_episodes": 1},
            id="all-normal",
        ),
        pytest.param(
            [1, 1, 1, 1], [0.1, 0.9, 0.8, 0.2],
            {"roc_auc": None, "average_precision": 1.0, "false_alarm_rate": None, "events": 1,
             "events_detected": 1, "mean_detection_delay_rows": 1.0, "recall": 0.5,
             "point_adjusted_f1": 1.0},
            id="all-anomalous",
        ),
        pytest.param(
            # both classes present, but the only positive row is unscored
            [1, 0, 0, 0], [NAN, 0.9, 0.8, 0.2],
            {"roc_auc": None, "average_precision": None, "scored_rows": 3, "positives": 1},
            id="one-class-among-scored",
        ),
    ],
)
def test_evaluate_one_class(labels, scores, expected):
    flags = [0, 1, 1, 0]
    assert_metrics(evaluate(labels, scores, flags), expected)


def test_evaluate_empty_series():
    result = evaluate([], [], [])
    assert_metrics(result, {"rows": 0, "scored_rows": 0, "tp": 0, "events": 0, "precision": None,
                            "f1": None, "roc_auc": None, "point_adjusted_f1": None,
                            "false_alarm_episodes": 0})


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        # one event [1, 5) first flagged at 4: delay 3
        (None, {"events": 1, "events_detected": 1, "event_recall": 1.0, "mean_detection_delay_rows": 3.0,
                "point_adjusted_f1": 1.0}),
        # the series [0, 3) + [3, 6): events [1, 3) (missed) and [3, 5) (hit at 4: delay 1)
        # point-adjusted: tp = 2, fn = 2 -> 4 / (4 + 0 + 2) = 2/3
        ([0, 3], {"events": 2, "events_detected": 1, "event_recall": 0.5, "mean_detection_delay_rows": 1.0,
                  "point_adjusted_f1": 2 / 3}),
        (np.array([3], dtype=np.int32), {"events": 2, "events_detected": 1}),
        ([0, 1, 6], {"events": 1}),  # a cut at an event start or at the end splits nothing
    ],
)
def test_evaluate_segments_split_events(segments, expected):
    labels = [0, 1, 1, 1, 1, 0]
    flags = [0, 0, 0, 0, 1, 0]
    assert_metrics(evaluate(labels, np.zeros(6), flags, segments=segments), expected)


@pytest.mark.parametrize(("segments", "episodes"), [(None, 0), ([0, 2], 1)])
def test_evaluate_segments_split_false_alarm_episodes(segments, episodes):
    # flags [0, 3) contain the anomaly at row 0; cut at 2, the run [2, 3) has no anomaly
    result = evaluate([1, 0, 0, 0], np.zeros(4), [1, 1, 1, 0], segments=segments)
    assert result["false_alarm_episodes"] == episodes


def test_evaluate_result_is_plain_json():
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.2).astype(np.int8)
    scores = rng.normal(size=200).astype(np.float32)
    scores[:10] = np.nan
    flags = (scores > 0.5).astype(np.uint8)
    result = evaluate(labels, scores, flags, timestamps=np.arange(200) * 0.25, segments=[0, 100])
    assert all(type(v) in (int, float, type(None)) for v in result.values())
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert set(result) == {
        "rows", "scored_rows", "positives", "tp", "fp", "tn", "fn", "precision", "recall", "f1",
        "false_alarm_rate", "missed_alarm_rate", "roc_auc", "average_precision", "events",
        "events_detected", "event_recall", "point_adjusted_f1", "mean_detection_delay_rows",
        "mean_detection_delay_seconds", "false_alarm_episodes", "pa_k_f1",
    }
    assert result["tp"] + result["fp"] + result["tn"] + result["fn"] == 200


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(labels=[0, 1], scores=[0.1], flags=[0, 1]), "labels has 2.*scores has 1"),
        (dict(labels=[0, 1], scores=[0.1, 0.2], flags=[0, 1, 0]), "labels has 2.*flags has 3"),
        (dict(labels=[0, 1], scores=[0.1, 0.2], flags=[0, 1], timestamps=[0.0]), "timestamps has 1"),
        (dict(labels=[0, 2], scores=[0.1, 0.2], flags=[0, 1]), "labels must contain only 0 and 1"),
        (dict(labels=[0, 0.5], scores=[0.1, 0.2], flags=[0, 1]), "labels must contain only 0 and 1"),
        (dict(labels=[0, NAN], scores=[0.1, 0.2], flags=[0, 1]), "labels must contain only 0 and 1"),
        (dict(labels=[0, 1], scores=[0.1, 0.2], flags=[0, -1]), "flags must contain only 0 and 1"),
        (dict(labels=[[0, 1]], scores=[0.1, 0.2], flags=[0, 1]), "labels must be 1-D"),
        (dict(labels=[0, 1], scores=[0.1, 0.2], flags=[0, 1], timestamps=[0.0, NAN]), "finite"),
        (dict(labels=[0, 1], scores=[0.1, 0.2], flags=[0, 1], segments=[5]), r"segment starts must lie in \[0, 2\]"),
        (dict(labels=[0, 1], scores=[0.1, 0.2], flags=[0, 1], segments=[1.0]), "integer"),
    ],
)
def test_evaluate_rejects_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate(kwargs.pop("labels"), kwargs.pop("scores"), kwargs.pop("flags"), **kwargs)


def test_pa_k_adjusts_only_events_flagged_for_at_least_k():
    # two events of 10 rows: the first has 3 rows flagged (30 %), the second 1 row (10 %)
    labels = np.zeros(40, np.int8)
    labels[5:15] = 1
    labels[25:35] = 1
    flags = np.zeros(40, np.int8)
    flags[[6, 7, 8, 30]] = 1
    scores = flags.astype(float)
    m = evaluate(labels, scores, flags, pa_k=0.2)
    # PA%K: the first event counts whole (tp 10 + 1), the second keeps its one row: tp 11, fn 9, fp 0
    assert m["pa_k_f1"] == pytest.approx(2 * 11 / (2 * 11 + 9))
    # plain point adjustment counts both events whole
    assert m["point_adjusted_f1"] == pytest.approx(1.0)
    # K = 0 is plain point adjustment
    assert evaluate(labels, scores, flags, pa_k=0.0)["pa_k_f1"] == pytest.approx(1.0)
