"""Detection quality on labelled public data, with baselines measured in the same run.

One command runs the product's default training and scoring path (training.job.train_model
and detector.offline.score_table: what `vigil train` and `vigil score` run, with the
model's own threshold and alert rule) on labelled data sets, each with its usual protocol:

  skab  34 files of a pump test rig; per file: train on the first 400 rows, score the
        file, evaluate rows 400 onwards (the SKAB leaderboard's protocol).
  tep   Tennessee Eastman process (a sample every 3 min): train on the normal run d00 (500 rows), score the
        test runs of faults 01-21 (fault from row 160) and fault00 (normal throughout);
        false alarms are counted on rows 0-159 of every run and the whole of fault00.
  smd   7 server machines (a sample a minute): train on each machine's train half, score its test half.
  nab   NAB's 7 realKnownCause series (one sensor each, real timestamps 5 min to 1 h apart:
        a machine's temperature, a room's, CPU, latency, taxi demand, keystrokes), labelled
        with NAB's anomaly windows: train on the rows before the first window (at most NAB's
        probationary 15 %), evaluate the rest. Not in ../shared/data: give --nab a copy of
        the NAB repository (github.com/numenta/NAB; its data/ and labels/ folders).

Rows that no method can score (the first window-1 rows of a scored file) are left out
of every figure. For each data set it prints one table, one line per method:

  vigil       the product's defaults
  v0          the model before the detection-quality work (MLP, precision-weighted
              whole-window error, POT x 2.5 margin): where we started
  prev        the defaults before the cross-fitted threshold (fitted to the validation
              windows' scores on sensor scales measured on those same windows, risk 1e-3
              per window, x 2 margin)
  untrained   the same path with random weights (epochs = 0), calibrated as usual
  pca         PCA reconstruction (Q statistic) of each reading, components for 90 % of
              the variance; flags: 0.99 training quantile, 3 of 5 persistence
  magnitude   mean squared standardised value over the window ("reconstruct zeros");
              flags as pca

On SKAB a further line gives vigil's scores flagged by the rule of the SKAB repository's
notebooks, which made its published rows (a row counts when every window that contains it
and starts before it is over the threshold: it looks up to window-2 rows ahead, which a
streaming detector cannot): for comparing with those rows only.

Columns: point precision/recall/F1 (no point adjustment), FAR, MAR, ROC-AUC pooled over
series (scores as score/threshold) and mean per series, average precision, PA%K F1
(K = 20 %, Kim et al. AAAI 2022) next to plain point-adjusted F1, event recall,
false-alarm episodes, mean detection delay (rows), and over%: the share of normal rows
whose window score is over the threshold (the model's `risk` is the share it was
calibrated for, 0.1 %).

    python benchmarks/quality.py                       # all three, ../shared/data/...
    python benchmarks/quality.py --quick               # a few series each (minutes)
    python benchmarks/quality.py --sets tep --methods vigil,pca --out bench-results/q.json
    python benchmarks/quality.py --ablation            # README's ablation table: each change off in turn

--set KEY=VALUE (repeatable) overrides a training setting for the vigil method (keys as
training.config.load_config keywords, e.g. --set window=30); use it to explore, never
to pick a per-data-set setting.

--seeds 0,1,2,3,4 trains every trained method once per seed and prints its mean, lowest and
highest figures (pca and magnitude do not depend on one, and run once): SKAB's and TEP's
models are small and few, and one seed's figure can sit anywhere in that range (README, "How
much one training seed decides"). It takes as many times as long.

    python benchmarks/quality.py --sets tep,skab --methods vigil,untrained,pca --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from detector.alerts import AlertPolicy, AlertTracker  # noqa: E402
from detector.csvdata import iso_seconds, read_csv  # noqa: E402
from detector.table import DataError, SensorTable  # noqa: E402
from detector.offline import score_table  # noqa: E402
from detector.preprocessing import Scaler, windows  # noqa: E402
from detector.threshold import Persistence  # noqa: E402
from training.config import load_config  # noqa: E402
from training.evaluation import evaluate, roc_auc  # noqa: E402
from training.job import train_model  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SKAB_TRAIN_ROWS = 400
TEP_FAULT_ROW = 160
TEP_INTERVAL, SMD_INTERVAL = 180.0, 60.0  # seconds: their READMEs' sampling (timestamps number the rows)
BASELINE_QUANTILE, BASELINE_RULE = 0.99, Persistence(3, 5)
PCA_VARIANCE = 0.90
NAB_PROBATION = 0.15  # NAB's probationary share of each file

# The settings of the model as it stood before the detection-quality work.
V0 = {"architecture": "mlp", "normalization": "none", "weighting": "precision", "focus": "window",
      "aggregate": "mean", "margin": 2.5, "risk": 1e-3, "min_shape": -10.0, "cross_fit": False}


# ----------------------------------------------------------------------------- data sets

@dataclass(frozen=True)
class Case:
    """One model's training data and the series it is judged on.

    tests: (table with labels, first row that counts) pairs.
    """

    name: str
    train: list[SensorTable]
    tests: list[tuple[SensorTable, int]]


def head(table: SensorTable, rows: int) -> SensorTable:
    """The first rows of a table, without labels, with the skipped rows among them."""
    skipped = table.skipped and table.skipped.subset(table.skipped.follows() < rows)
    if skipped is not None:
        skipped = dataclasses.replace(skipped, labels=None)
    return dataclasses.replace(table, time_raw=table.time_raw[:rows], time=table.time[:rows],
                               values=table.values[:rows], labels=None, skipped=skipped)


def skab_cases(root: Path, quick: bool) -> list[Case]:
    files = [p for sub in ("valve1", "valve2", "other") for p in sorted((root / sub).glob("*.csv"),
                                                                          key=lambda p: int(p.stem))]
    if not files:
        raise SystemExit(f"no SKAB files under {root} (expected valve1/, valve2/, other/)")
    if quick:
        files = files[::6]
    cases = []
    for path in files:
        table = read_csv(path, drop_columns=("changepoint",))
        cases.append(Case(f"{path.parent.name}/{path.stem}", [head(table, SKAB_TRAIN_ROWS)],
                          [(table, SKAB_TRAIN_ROWS)]))
    return cases


def spaced(table: SensorTable, seconds: float) -> SensorTable:
    """A table whose timestamps number its rows (0, 1, 2, ...) with the sampling interval its
    data set documents: what a user exports from a historian (it sets how many windows make a
    day, see [threshold] per_day)."""
    return dataclasses.replace(table, time=table.time * seconds)


def tep_cases(root: Path, quick: bool) -> list[Case]:
    faults = [0, 1, 2, 4, 6, 11, 17, 19] if quick else range(22)
    train = spaced(read_csv(root / "fault01" / "train.csv"), TEP_INTERVAL)
    tests = []
    for f in faults:
        t = spaced(read_csv(root / f"fault{f:02d}" / "test.csv"), TEP_INTERVAL)
        if t.labels is None:
            raise SystemExit(f"{root}/fault{f:02d}/test.csv: no anomaly column")
        tests.append((t, 0))
    return [Case("tep", [train], tests)]


def smd_cases(root: Path, quick: bool) -> list[Case]:
    machines = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not machines:
        raise SystemExit(f"no SMD machines under {root}")
    if quick:
        machines = machines[:2]
    return [Case(m, [spaced(read_csv(root / m / "train.csv"), SMD_INTERVAL)],
                 [(spaced(read_csv(root / m / "test.csv"), SMD_INTERVAL), 0)]) for m in machines]


def nab_labels(time: np.ndarray, spans: list[list[str]]) -> np.ndarray:
    """NAB's anomaly windows ([start, end] timestamps, read as the data's time cells are:
    naive = UTC) as labels of rows at these times (epoch seconds)."""
    labels = np.zeros(len(time), bool)
    for span in spans:
        lo, hi = iso_seconds(span, lambda i, message: DataError(f"NAB window {span}: {message}"))
        labels |= (time >= lo) & (time <= hi)
    return labels


def nab_cases(root: Path, quick: bool) -> list[Case]:
    """NAB's realKnownCause series (one sensor each, real timestamps: 5 min to 1 h apart),
    labelled with NAB's anomaly windows. Per file: train on the rows before its first
    window, at most NAB's probationary 15 %, so no labelled row is trained on; evaluate the
    rest."""
    spans = json.loads((root / "labels" / "combined_windows.json").read_text())
    files = sorted((root / "data" / "realKnownCause").glob("*.csv"))
    if not files:
        raise SystemExit(f"no NAB files under {root}/data/realKnownCause")
    if quick:
        files = [p for p in files if p.stem == "machine_temperature_system_failure"] or files[:1]
    cases = []
    for path in files:
        table = read_csv(path)
        windows_of = spans[f"realKnownCause/{path.name}"]
        labels = nab_labels(table.time, windows_of)
        first = int(np.argmax(labels)) if labels.any() else len(labels)
        rows = min(first, int(NAB_PROBATION * len(labels)))
        skipped = table.skipped and dataclasses.replace(table.skipped,
                                                        labels=nab_labels(table.skipped.time, windows_of))
        table = dataclasses.replace(table, labels=labels, skipped=skipped)
        cases.append(Case(path.stem, [head(table, rows)], [(table, rows)]))
    return cases


LOADERS = {"skab": skab_cases, "tep": tep_cases, "smd": smd_cases, "nab": nab_cases}


# ----------------------------------------------------------------------------- methods

# A method: (training tables) -> a function (table) -> (score [rows] on a threshold-1 scale, flags [rows]).
Method = Callable[[list[SensorTable]], Callable[[SensorTable], tuple[np.ndarray, np.ndarray]]]


def vigil_method(overrides: dict) -> Method:
    config = load_config(**overrides)

    def fit(train):
        model, _ = train_model(train, config)
        scorer = model.scorer()

        def score(table):
            s = score_table(model, table, scorer)
            return s.normalized, s.flags
        return score
    return fit


def _standardised(train: list[SensorTable]) -> tuple[Scaler, np.ndarray, tuple[str, ...]]:
    sensors = train[0].sensors
    x = np.concatenate([t.select(sensors) for t in train])
    scaler = Scaler.fit(x)
    return scaler, np.nan_to_num((x - scaler.center) / scaler.scale), sensors


def _baseline(score_fn, train, sensors) -> Callable:
    ref = np.concatenate([score_fn(t.select(sensors)) for t in train])
    threshold = float(np.nanquantile(ref, BASELINE_QUANTILE))

    def score(table):
        s = score_fn(table.select(sensors)) / threshold
        with np.errstate(invalid="ignore"):
            return s, BASELINE_RULE.apply(s > 1.0)
    return score


def pca_method(train: list[SensorTable]):
    scaler, z, sensors = _standardised(train)
    _, sv, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    explained = np.cumsum(sv**2) / np.sum(sv**2)
    k = int(np.searchsorted(explained, PCA_VARIANCE) + 1)
    p = vt[:k].T

    def q(values):
        x = np.nan_to_num((values - scaler.center) / scaler.scale)
        residual = x - (x @ p) @ p.T
        return np.mean(residual**2, axis=1)
    return _baseline(q, train, sensors)


def magnitude_method(window: int) -> Method:
    def fit(train):
        scaler, _, sensors = _standardised(train)

        def magnitude(values):
            x = (values - scaler.center) / scaler.scale
            observed = np.isfinite(x)
            sq = np.where(observed, x, 0.0) ** 2
            out = np.full(len(x), np.nan)
            if len(x) >= window:
                out[window - 1:] = windows(sq, window).sum(axis=(1, 2)) / np.maximum(
                    windows(observed, window).sum(axis=(1, 2)), 1)
            return out
        return _baseline(magnitude, train, sensors)
    return fit


# Methods whose figures do not depend on a training seed.
SEED_FREE = ("pca", "magnitude")


def methods(names: list[str], overrides: dict) -> dict[str, Callable[[dict], Method]]:
    """name -> a function of further settings (e.g. {"seed": 3}) giving the method."""
    window = load_config(**overrides).model.window
    every = {
        "vigil": lambda extra: vigil_method(overrides | extra),
        "prev": lambda extra: vigil_method(overrides | {"cross_fit": False, "margin": 2.0, "risk": 1e-3} | extra),
        "v0": lambda extra: vigil_method(V0 | overrides | extra),
        "untrained": lambda extra: vigil_method(overrides | {"epochs": 0} | extra),
        "pca": lambda extra: pca_method,
        "magnitude": lambda extra: magnitude_method(window),
    }
    unknown = set(names) - set(every)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)} (known: {', '.join(every)})")
    return {n: every[n] for n in names}


# ----------------------------------------------------------------------------- evaluation

def skab_notebook_flags(score: np.ndarray, window: int) -> np.ndarray:
    """The flags of the SKAB repository's notebooks (e.g. notebooks/Conv_AE.ipynb), by which its
    published rows were made: row i is flagged when all window-1 windows that start before it
    and contain it are over the threshold. Those windows end up to window-2 rows after i: the
    rule looks ahead, so a streaming detector cannot use it; it is reported beside the
    product's own flags only to compare with the published rows."""
    with np.errstate(invalid="ignore"):
        over = np.asarray(score, np.float64) > 1.0  # score[t]: the window ending at row t
    span = window - 1
    padded = np.concatenate([over, np.zeros(span, bool)])
    return windows(padded[:, None], span)[:, :, 0].all(axis=1)[:len(over)]


def alert_spans(score: np.ndarray, persistence: Persistence = BASELINE_RULE) -> list[tuple[int, int]]:
    """The alerts `vigil serve` would open on one series' scores (threshold-1 scale, NaN where
    unscored), under its default alert policy (open on k of n windows over threshold, resolve
    after 30 windows under 0.8): (first row, last row) of each, the last row of the series
    for one still open at its end. An alert is what pages an operator; flag episodes that
    the policy merges make one."""
    tracker = AlertTracker(AlertPolicy().for_model(persistence), 1.0, "quality")
    spans, opened = [], None
    for row in np.flatnonzero(np.isfinite(score)).tolist():
        event = tracker.observe("a", row * 1000, float(score[row]), float(score[row]), list)
        if event is not None and event.type == "open":
            opened = row
        elif event is not None and event.type == "resolve":
            spans.append((opened, row))
            opened = None
    if opened is not None:
        spans.append((opened, len(score) - 1))
    return spans


def pooled_metrics(labels: list[np.ndarray], scores: list[np.ndarray], flags: list[np.ndarray]) -> dict:
    """Metrics pooled over series (each series' labels, scores on a threshold-1 scale and flags,
    already cut to the rows that count), with the mean of the per-series ROC-AUCs and the share
    of normal rows over the threshold."""
    segments = np.cumsum([0] + [len(y) for y in labels[:-1]]).astype(np.int64)
    per_series = []
    for y, s in zip(labels, scores):
        if y.any() and not y.all():
            ok = np.isfinite(s)
            per_series.append(roc_auc(y[ok], s[ok]))
    y, s, f = np.concatenate(labels), np.concatenate(scores), np.concatenate(flags)
    m = evaluate(y, s, f, segments=segments)
    m["roc_auc_mean_per_series"] = float(np.mean([a for a in per_series if a is not None]))
    normal = ~y & np.isfinite(s)
    m["normal_over_threshold"] = float(np.mean(s[normal] > 1.0)) if normal.any() else None
    # alerts that never meet a labelled row between opening and resolving: pages without a reason
    spans = [(series, a, b) for series, sc in zip(labels, scores) for a, b in alert_spans(sc)]
    m["alerts"] = len(spans)
    m["false_alerts"] = sum(1 for series, a, b in spans if not series[a:b + 1].any())
    return m


def run_set(cases: list[Case], method: Method, skip: int, also: dict[str, Callable] | None = None) -> dict:
    """Train per case, score its tests, evaluate pooled over every test series. also: other
    flag rules (name -> function of a series' scores) evaluated on the same scores; their
    metrics come back under "also"."""
    also = also or {}
    labels, scores, flags = [], [], []
    other = {name: [] for name in also}
    t0 = time.perf_counter()
    for case in cases:
        score = method(case.train)
        for table, first in case.tests:
            s, f = score(table)
            lo = max(first, skip)
            for name, rule in also.items():
                other[name].append(np.asarray(rule(s), bool)[lo:])
            s = np.asarray(s[lo:], np.float64)
            labels.append(table.labels[lo:].astype(bool))
            scores.append(np.where(np.isfinite(s), s, np.nan))
            flags.append(np.asarray(f[lo:], bool))
    m = pooled_metrics(labels, scores, flags)
    m["seconds"] = round(time.perf_counter() - t0, 1)
    if also:
        # the same scores flagged another way: only the flag-based figures differ
        same = ("roc_auc_mean_per_series", "normal_over_threshold")
        m["also"] = {name: {k: v for k, v in pooled_metrics(labels, scores, fs).items() if k not in same}
                     for name, fs in other.items()}
    return m


COLUMNS = [("P", "precision", 1), ("R", "recall", 1), ("F1", "f1", 1), ("FAR%", "false_alarm_rate", 100),
           ("MAR%", "missed_alarm_rate", 100), ("AUC", "roc_auc", 1), ("AUC/s", "roc_auc_mean_per_series", 1),
           ("AP", "average_precision", 1), ("PA%K", "pa_k_f1", 1), ("PA-F1", "point_adjusted_f1", 1),
           ("ev.rec", "event_recall", 1), ("FA ep", "false_alarm_episodes", 1), ("FA al", "false_alerts", 1),
           ("delay", "mean_detection_delay_rows", 1), ("over%", "normal_over_threshold", 100), ("s", "seconds", 1)]


def print_table(title: str, results: dict[str, dict]) -> None:
    print(f"\n{title}")
    width = max(22, *(len(n) + 2 for n in results))
    print(f"{'method':<{width}}" + "".join(f"{c:>8}" for c, _, _ in COLUMNS))
    for name, m in results.items():
        cells = []
        for _, key, scale in COLUMNS:
            v = m.get(key)
            if v is None:
                cells.append(f"{'-':>8}")
            elif key in ("false_alarm_episodes", "false_alerts"):
                cells.append(f"{int(v):>8d}")
            elif key in ("mean_detection_delay_rows", "seconds"):
                cells.append(f"{v:>8.1f}")
            else:
                cells.append(f"{v * scale:>8.{1 if scale == 100 else 3}f}")
        print(f"{name:<{width}}" + "".join(cells))


def over_seeds(per_seed: dict, names: list[str]) -> dict:
    """Each method's (or rule's) figures over the seeds: per_seed {seed: {name: metrics}} ->
    {name: {"mean"|"min"|"max": {metric: value}}} (the numeric metrics every seed has)."""
    out = {}
    for name in names:
        runs = [per_seed[seed][name] for seed in per_seed]
        keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and all(r.get(k) is not None for r in runs)]
        out[name] = {stat: {k: float(f([r[k] for r in runs])) for k in keys}
                     for stat, f in (("mean", np.mean), ("min", np.min), ("max", np.max))}
    return out


def environment() -> dict:
    """What the figures were measured with: the libraries whose numerics move trained models
    (pyproject pins lower bounds only), Python and the cores."""
    from importlib.metadata import version

    return {"python": sys.version.split()[0], "cpu_count": os.cpu_count(),
            **{name: version(name) for name in ("jax", "jaxlib", "flax", "optax", "numpy")}}


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


SKAB_RULE = "SKAB notebooks' flags (look ahead; not the product)"

# Each product change, switched back to how it was, one at a time (README's ablation table).
ABLATIONS = {
    "per-sensor tail scale -> precision weighting (old score)": {"normalization": "none", "aggregate": "mean"},
    "top-3 sensors -> mean of all sensors": {"aggregate": "mean"},
    "whole window -> recent steps weighted": {"focus": "recent"},
    "exponential-or-heavier POT tail -> any shape": {"min_shape": -10.0},
    "1 window a day over threshold -> risk 1e-3 per window": {"risk": 1e-3},
    "cross-fitted threshold -> fitted to in-sample scores x margin 2 (before)": {"cross_fit": False, "margin": 2.0},
    "cross-fitted threshold -> fitted to in-sample scores, margin 1": {"cross_fit": False},
}
# Changes tried and not taken as defaults, each switched on alone.
ALTERNATIVES = {
    "+ robust training (5 % worst windows left out)": {"robust_fraction": 0.05},
    "+ temporal (1-D conv) VAE": {"architecture": "conv"},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="skab,tep,smd", help="comma-separated: skab, tep, smd, nab")
    p.add_argument("--methods", default="vigil,prev,v0,untrained,pca,magnitude")
    p.add_argument("--skab", type=Path, default=DATA / "skab")
    p.add_argument("--tep", type=Path, default=DATA / "tep")
    p.add_argument("--smd", type=Path, default=DATA / "smd")
    p.add_argument("--nab", type=Path, default=DATA / "nab",
                   help="a copy of the NAB repository (numenta/NAB: data/ and labels/)")
    p.add_argument("--quick", action="store_true", help="a few series per data set")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training setting override")
    p.add_argument("--ablation", action="store_true", help="vigil with each change switched off in turn")
    p.add_argument("--seeds", help="train each trained method with each of these seeds (comma-separated) and "
                   "print its mean, lowest and highest figures")
    p.add_argument("--out", type=Path, default=Path("bench-results/quality.json"))
    args = p.parse_args()
    overrides = parse_overrides(args.set)
    sets = [s for s in args.sets.split(",") if s]
    for s in sets:
        if s not in LOADERS:
            raise SystemExit(f"unknown data set {s!r} (known: {', '.join(LOADERS)})")
    if args.ablation:
        changes = {"vigil": {}} | {f"- {name}": change for name, change in ABLATIONS.items()} | ALTERNATIVES
        def changed(change: dict) -> Callable[[dict], Method]:
            return lambda extra: vigil_method(overrides | change | extra)
        chosen = {name: changed(change) for name, change in changes.items()}
    else:
        chosen = methods([m for m in args.methods.split(",") if m], overrides)
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else None
    skip = load_config(**overrides).model.window - 1
    out = {"overrides": overrides, "quick": args.quick, "seeds": seeds, "environment": environment(), "sets": {}}
    for s in sets:
        cases = LOADERS[s](getattr(args, s), args.quick)
        results, table = {}, {}
        for name, build in chosen.items():
            also = {SKAB_RULE: lambda score: skab_notebook_flags(score, skip + 1)} \
                if s == "skab" and name == "vigil" else None
            per_seed = {}
            for seed in [None] if seeds is None or name in SEED_FREE else seeds:
                print(f"{s}: {name}{'' if seed is None else f' (seed {seed})'} ...", file=sys.stderr, flush=True)
                m = run_set(cases, build({} if seed is None else {"seed": seed}), skip, also)
                per_seed[seed] = {name: m} | {f"{name}, {other}": om for other, om in m.pop("also", {}).items()}
            if None in per_seed:
                results |= per_seed[None]
                table |= per_seed[None]
                continue
            summary = over_seeds(per_seed, list(per_seed[seeds[0]]))
            for key, stats in summary.items():
                results[key] = {"seeds": {str(seed): per_seed[seed][key] for seed in seeds}, "summary": stats}
                table |= {f"{key} {stat}": stats[stat] for stat in ("mean", "min", "max")}
        out["sets"][s] = results
        title = f"{s} ({len(cases)} models, {sum(len(c.tests) for c in cases)} series"
        print_table(title + (f"; seeds {args.seeds}: mean, lowest, highest)" if seeds else ")"), table)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
