"""Score-rule study: many ways of turning the default models' errors into a score, on the same
models and rows, each calibrated and flagged as the product does.

benchmarks/quality.py trains a model per method; a change to the score alone does not need
that. This trains each data set's default models once (training.job.train_model, the
`--set` overrides applied), keeps every sensor's error on the validation windows the
threshold is calibrated on and on every test row (the rows placed on the model's time grid,
each scored by the window of its interval), and then, per rule: measures each sensor's
scale on the validation windows, fits the threshold to cross-fitted validation scores at the
model's risk (one window a day over it), flags 3 of 5 and evaluates as quality.py does (same
rows, same columns). The default rule comes out as quality.py's `vigil` row to within a few
rows; the title line says whether this run's default thresholds equal the models' own.

    python benchmarks/score_study.py                          # all rules, SKAB, TEP and SMD (~10 min)
    python benchmarks/score_study.py --sets skab --rules default,follow-clear
    python benchmarks/score_study.py --set latent=4 --cache bench-results/study-latent4
    python benchmarks/score_study.py --seeds 0,1,2,3,4 --sets skab,tep --rules default,parts-top3

With --seeds, each data set's models are trained once per seed (each seed's kept errors in
its own folder under --cache) and each rule's figures are printed as their mean, lowest and
highest over the seeds: SKAB's and TEP's models are small and few (TEP: one model, its
threshold fitted to 66 validation windows), and a figure of one seed can sit anywhere in that
range.

The kept errors go to --cache (one .npz per model, with the training settings they were made
with; a cache made with other settings is refused). Rules (--rules, comma-separated):

  default              each sensor's error over its validation median, on the scale of its
                       q99 (the product's rule), mean of the top 3 sensors
  q90-top3, q90-max, q95-top2, q95-max, q99-max
                       the scale at another quantile, another number of top sensors
  trim-2, trim-5       sensor scales measured without the 2 % (5 %) highest-scoring
                       validation windows (dirty normal data)
  follow-score         DSPOT's drift: the score minus its own average over earlier windows
                       under the threshold (half-life 1,200 windows)
  follow-sensors       each sensor's normalised error minus its own average over earlier
                       windows under the threshold (half-life 1,200), then the top 3
  follow-clear         the same, following only windows under a quarter of the threshold
                       (half-life 600)
  follow-clear-q90     the same with the scale at q90
  floor-300, floor-600, floor-1200, floor-2400
                       each sensor's normalised error minus its lowest of the last N windows
  floor-1200-q90-max   the same over 1,200 windows, with the scale at q90 and the largest sensor
  parts-top3           each sensor's error split in two parts, each measured on its own scale
                       as if it were a sensor of its own: its level (the squared mean of the
                       reconstruction error over the window: the window sits too high or too
                       low) and its shape (the rest: the error's spread over the window); top 3
  parts-level          the level part alone
  iqr-top3, iqr-max    each sensor's scale its interquartile range on the validation windows
  exp-q90, exp-q80, exp-q90-max
                       each sensor's normalised error the -log of its tail probability under
                       an exponential tail fitted above its q90 (q80) validation error
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import (DATA, LOADERS, Case, environment, over_seeds, parse_overrides, pooled_metrics,  # noqa: E402
                     print_table)

from detector.grid import place  # noqa: E402
from detector.preprocessing import model_input  # noqa: E402
from detector.scoring import (SPREAD_FLOOR, ScoreRule, aggregate, calibrate_rule, combine,  # noqa: E402
                              cross_fitted_scores, normalised_errors)
from detector.threshold import Persistence, calibrate  # noqa: E402
from training.config import load_config  # noqa: E402
from training.job import train_model  # noqa: E402

CACHE_VERSION = 3


# ----------------------------------------------------------------------------- kept errors

@functools.partial(jax.jit, static_argnums=(0, 1))
def _levels(graphdef, window, state, center, scale, time_weights, rows):
    # rows [block + window - 1, sensors] -> the level parts of the block's windows, gathered
    # on device as the product's block kernels do
    index = jnp.arange(rows.shape[0] - window + 1)[:, None] + jnp.arange(window)[None, :]
    x, maskf = model_input(rows[index], center, scale, jnp)
    w = time_weights[None, :, None] * maskf
    vae = nnx.merge(graphdef, state)
    mean = jnp.sum((x - vae.reconstruct(x, maskf)) * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1e-12)
    return mean ** 2


def level_errors(model, scorer, rows: np.ndarray) -> np.ndarray:
    """The level part of each full window's per-sensor error (the squared time-weighted mean of
    its reconstruction error; the rest of sensor_errors' value is the error's spread over the
    window, its shape), in the scorer's blocks: rows [n, sensors] -> [n - window + 1, sensors]."""
    window = model.config.window
    rows = np.asarray(rows, np.float32)
    graphdef, state = nnx.split(model.vae)
    args = (state, jnp.asarray(model.scaler.center), jnp.asarray(model.scaler.scale),
            jnp.asarray(model.scoring.time_weights(window)))
    out = np.zeros((max(len(rows) - window + 1, 0), rows.shape[1]), np.float32)
    for start, k, chunk in scorer._blocks(rows, None):
        out[start:start + k] = np.asarray(_levels(graphdef, window, *args, chunk))[:k]
    return out


def keep(case: Case, config) -> dict:
    """Train the case's model; its validation errors and every test row's errors (and their
    level parts, see level_errors): arrays by name."""
    if config.off_condition is not None:
        raise SystemExit("score_study places every row on the grid; it does not take an off condition")
    model, report = train_model(case.train, config)
    scorer, window = model.scorer(), model.config.window
    val = []  # as training calibrates: the errors of the validation windows the detector scores
    for rows, scorable in report["_validation_rows"]:
        e, o = scorer.sensor_errors_series(rows)
        scored = scorable[:len(e)]
        val.append((e[scored], o[scored], level_errors(model, scorer, rows)[scored]))
    errors, observed, levels = (np.concatenate(a) for a in zip(*val))
    kept = {"val_err": errors, "val_obs": observed, "val_lev": levels, "interval": np.float64(model.interval_seconds),
            "threshold": np.float64(model.threshold.value), "window": np.int64(window),
            "persistence": np.array([model.persistence.k, model.persistence.n]), "tests": np.int64(len(case.tests))}
    for j, (table, first) in enumerate(case.tests):
        placed = place(table.times_ms(), table.select(model.sensors), model.grid)
        e, o = scorer.sensor_errors_series(placed.rows)
        lev = level_errors(model, scorer, placed.rows)
        e, lev = (np.concatenate([np.full((window - 1, a.shape[1]), np.nan, np.float32), a]) for a in (e, lev))
        o = np.concatenate([np.zeros((window - 1, o.shape[1]), np.float32), o])
        e[~placed.scorable] = np.nan  # the windows the detector leaves unscored
        kept |= {f"t{j}_err": e[placed.slot], f"t{j}_obs": o[placed.slot], f"t{j}_lev": lev[placed.slot],
                 f"t{j}_run": placed.runs(),
                 f"t{j}_labels": table.labels.astype(bool), f"t{j}_first": np.int64(first)}
    return kept


def kept_errors(name: str, cases: list[Case], config, cache: Path) -> list[dict]:
    settings = json.dumps(config.to_dict(), sort_keys=True, default=str)
    out = []
    for i, case in enumerate(cases):
        path = cache / f"{name}_{i:02d}.npz"
        if path.exists():
            d = dict(np.load(path))
            if int(d["version"]) != CACHE_VERSION or str(d["settings"]) != settings or str(d["case"]) != case.name:
                raise SystemExit(f"{path}: made with other settings or data, or by an older score_study; "
                                 "use another --cache or delete it")
        else:
            t0 = time.perf_counter()
            d = keep(case, config) | {"version": np.int64(CACHE_VERSION), "settings": np.str_(settings),
                                       "case": np.str_(case.name)}
            cache.mkdir(parents=True, exist_ok=True)
            np.savez(path, **d)
            print(f"  {name} {case.name}: trained and kept in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        out.append(d)
    return out


# ----------------------------------------------------------------------------- rules

@dataclass(frozen=True)
class Rule:
    """quantile: where each sensor's scale is measured; top_k: sensors averaged; trim: share of
    the highest-scoring validation windows left out of the scales; follow: "score" or
    "sensors" (a baseline of earlier windows under gate x threshold, with this half-life in
    windows, is subtracted); floor: windows of the rolling per-sensor minimum subtracted;
    parts: "both" (each sensor's error split in its level and shape parts, each on its own
    scale, as if they were two sensors) or "level" (the level part alone); spread: "quantile"
    (the quantile's distance from the median) or "iqr" (the interquartile range); tail: a
    quantile above which an exponential tail is fitted to each sensor's errors (0: none), so
    that its normalised error is its tail probability's -log (see exp_tail)."""

    quantile: float = 0.99
    top_k: int = 3
    trim: float = 0.0
    follow: str | None = None
    half_life: float = 1200.0
    gate: float = 1.0
    floor: int = 0
    parts: str | None = None
    spread: str = "quantile"
    tail: float = 0.0


RULES = {
    "default": Rule(),
    "q90-top3": Rule(0.90), "q90-max": Rule(0.90, 1), "q95-top2": Rule(0.95, 2), "q95-max": Rule(0.95, 1),
    "q99-max": Rule(0.99, 1),
    "trim-2": Rule(trim=0.02), "trim-5": Rule(trim=0.05),
    "follow-score": Rule(follow="score"), "follow-sensors": Rule(follow="sensors"),
    "follow-clear": Rule(follow="sensors", half_life=600.0, gate=0.25),
    "follow-clear-q90": Rule(0.90, follow="sensors", half_life=600.0, gate=0.25),
    "floor-300": Rule(floor=300), "floor-600": Rule(floor=600), "floor-1200": Rule(floor=1200),
    "floor-2400": Rule(floor=2400), "floor-1200-q90-max": Rule(0.90, 1, floor=1200),
    "parts-top3": Rule(parts="both"), "parts-level": Rule(parts="level"),
    "iqr-top3": Rule(spread="iqr"), "iqr-max": Rule(top_k=1, spread="iqr"),
    "exp-q90": Rule(tail=0.90), "exp-q80": Rule(tail=0.80), "exp-q90-max": Rule(top_k=1, tail=0.90),
}


def exp_tail(calibrated: ScoreRule, errors: np.ndarray, observed: np.ndarray, q: float) -> ScoreRule:
    """Each sensor's scale from an exponential tail fitted above its q quantile: spread = its
    mean excess m over that quantile u, location = u - ln(1 / (1 - q)) m, so that an error e
    over u normalises to -ln P(error > e) under the fitted tail (q90: 2.3 at u, +1 per m).
    Sensors with fewer than 2 windows, and the floor on tiny spreads, as calibrate_rule."""
    e = np.where(observed > 0, np.asarray(errors, np.float64), np.nan)
    location, spread = np.array(calibrated.location), np.array(calibrated.spread)
    ok = np.isfinite(e).sum(axis=0) >= 2
    with np.errstate(all="ignore"):
        u = np.nanquantile(e[:, ok], q, axis=0)
        m = np.array([np.mean(col[col > t] - t) if np.any(col > t) else 0.0
                      for col, t in zip(e[:, ok].T, u)])
    floor = max(SPREAD_FLOOR * float(np.median(m)), 1e-6) if ok.any() else 1.0
    spread[ok] = np.maximum(m, floor)
    location[ok] = u - np.log(1.0 / (1.0 - q)) * spread[ok]
    spread[~ok] = float(np.median(spread[ok])) if ok.any() else 1.0
    return dataclasses.replace(calibrated, location=tuple(location.tolist()), spread=tuple(spread.tolist()))


def scales(rule: Rule, errors: np.ndarray, observed: np.ndarray) -> ScoreRule:
    """The product's score rule with each sensor's location and spread measured on these windows."""
    base = ScoreRule(top_k=rule.top_k)
    quantiles = (0.75, 0.25) if rule.spread == "iqr" else (rule.quantile, None)

    def measure(e: np.ndarray, o: np.ndarray) -> ScoreRule:
        calibrated = calibrate_rule(base, e, o, *quantiles)
        return exp_tail(calibrated, e, o, rule.tail) if rule.tail else calibrated

    calibrated = measure(errors, observed)
    if rule.trim > 0:
        score = static_scores(calibrated, errors, observed)
        keep = score <= np.nanquantile(score, 1 - rule.trim)
        calibrated = measure(errors[keep], observed[keep])
    return calibrated


def static_scores(calibrated: ScoreRule, errors: np.ndarray, observed: np.ndarray) -> np.ndarray:
    score, _ = combine(errors, observed, calibrated, np.asarray(calibrated.location, np.float32),
                       np.asarray(calibrated.spread, np.float32))
    return np.asarray(score, np.float64)


def threshold(rule: Rule, d: dict, config) -> float:
    """As training: fitted to cross-fitted validation scores (each half on the other's scales)."""
    scores = cross_fitted_scores(ScoreRule(top_k=rule.top_k), d["val_err"], d["val_obs"],
                                 lambda _, e, o: scales(rule, e, o))
    options = config.threshold_options(float(d["interval"]))
    return calibrate(scores[np.isfinite(scores)], config.threshold_method, **options).value


def series_scores(rule: Rule, calibrated: ScoreRule, thr: float, e: np.ndarray, o: np.ndarray) -> np.ndarray:
    """One test series' scores (NaN where not scored): the product's aggregation (top k, ties
    at the k-th included) of each sensor's normalised error, less its baseline if the rule has one."""
    unscored = ~np.isfinite(e).any(axis=1)
    e = np.nan_to_num(e)
    if rule.follow is None and rule.floor == 0:
        return np.where(unscored, np.nan, static_scores(calibrated, e, o))
    seen = o > 0
    n = normalised_errors(e, o, np.asarray(calibrated.location), np.asarray(calibrated.spread), np)

    def score(x, s):
        return aggregate(x, s, calibrated, np)[0]

    if rule.floor:
        low = np.where(unscored[:, None], np.inf, n)
        low = np.concatenate([np.full((rule.floor - 1, n.shape[1]), np.inf), low])
        low = np.lib.stride_tricks.sliding_window_view(low, rule.floor, axis=0).min(axis=-1)
        return np.where(unscored, np.nan, score(np.maximum(n - np.where(np.isfinite(low), low, 0.0), 0.0), seen))
    decay = 0.5 ** (1.0 / rule.half_life)
    out = np.full(len(n), np.nan)
    base = np.zeros(n.shape[1]) if rule.follow == "sensors" else 0.0
    for t in np.flatnonzero(~unscored):  # in time order: each window's baseline is of the windows before it
        if rule.follow == "sensors":
            out[t] = score(np.maximum(n[t] - base, 0.0)[None], seen[t][None])[0]
            if out[t] <= rule.gate * thr:
                base = decay * base + (1 - decay) * n[t]
        else:
            raw = float(score(n[t][None], seen[t][None])[0])
            out[t] = max(raw - base, 0.0)
            if out[t] <= rule.gate * thr:
                base = decay * base + (1 - decay) * raw
    return out


def split(rule: Rule, d: dict) -> dict:
    """The kept errors as the rule's parts see them (see Rule.parts)."""
    if rule.parts is None:
        return d
    d = dict(d)
    for prefix in ["val"] + [f"t{j}" for j in range(int(d["tests"]))]:
        e, o = d[f"{prefix}_err"], d[f"{prefix}_obs"]
        level = np.where(np.isfinite(e), d[f"{prefix}_lev"], np.nan)
        if rule.parts == "level":
            d[f"{prefix}_err"] = level
        else:  # the shape part: the error's spread over the window
            d[f"{prefix}_err"] = np.concatenate([level, np.maximum(e - level, 0.0)], axis=1)
            d[f"{prefix}_obs"] = np.concatenate([o, o], axis=1)
    return d


def run_rule(rule: Rule, kept: list[dict], config) -> tuple[dict, list[float]]:
    t0 = time.perf_counter()
    labels, scores, flags, thresholds = [], [], [], []
    for d in kept:
        d = split(rule, d)
        calibrated = scales(rule, d["val_err"], d["val_obs"])
        thr = threshold(rule, d, config)
        thresholds.append(thr)
        persistence = Persistence(*(int(v) for v in d["persistence"]))
        skip = int(d["window"]) - 1
        for j in range(int(d["tests"])):
            s = series_scores(rule, calibrated, thr, d[f"t{j}_err"], d[f"t{j}_obs"]) / thr
            # as score_chunks: the count runs over scored windows, afresh from the first of each run
            scored = np.flatnonzero(np.isfinite(s))
            runs = d[f"t{j}_run"][scored]
            f = np.zeros(len(s), bool)
            f[scored] = persistence.apply(s[scored] > 1.0, runs != np.r_[-1, runs[:-1]])
            lo = max(int(d[f"t{j}_first"]), skip)
            labels.append(d[f"t{j}_labels"][lo:]), scores.append(s[lo:]), flags.append(f[lo:])
    return pooled_metrics(labels, scores, flags) | {"seconds": round(time.perf_counter() - t0, 1)}, thresholds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="skab,tep,smd")
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--data", type=Path, default=DATA, help="the folder holding skab/, tep/ and smd/")
    p.add_argument("--quick", action="store_true", help="a few series of each set")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a training setting")
    p.add_argument("--seeds", help="train with each of these seeds (comma-separated, each in its own cache "
                   "folder) and print each rule's mean, lowest and highest figure over them")
    p.add_argument("--cache", type=Path, default=Path("bench-results/score-study"))
    p.add_argument("--out", type=Path, default=Path("bench-results/score_study.json"))
    args = p.parse_args()
    rules = args.rules.split(",")
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise SystemExit(f"unknown rules {unknown} (known: {', '.join(RULES)})")
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [None]
    results = {}
    for name in args.sets.split(","):
        if name not in LOADERS:
            raise SystemExit(f"unknown set {name!r} (known: {', '.join(LOADERS)})")
        cases = LOADERS[name](args.data / name, args.quick)
        per_seed, same = {}, True
        for seed in seeds:
            overrides = parse_overrides(args.set) | ({} if seed is None else {"seed": seed})
            config = load_config(**overrides)
            cache = args.cache / ("" if seed is None else f"seed{seed}") / ("quick" if args.quick else "full")
            kept = kept_errors(name, cases, config, cache)
            per_seed[seed] = {}
            for rule_name in rules:
                per_seed[seed][rule_name], thresholds = run_rule(RULES[rule_name], kept, config)
                if rule_name == "default":
                    same &= np.allclose(thresholds, [float(d["threshold"]) for d in kept], rtol=1e-4)
        check = f"; the default rule's thresholds {'equal' if same else 'DIFFER from'} the models' own" \
            if "default" in rules else ""
        if seeds == [None]:
            results[name] = per_seed[None]
            print_table(f"{name.upper()} ({len(kept)} models{check})", results[name])
        else:
            results[name] = {"seeds": {str(k): v for k, v in per_seed.items()}, "summary": over_seeds(per_seed, rules)}
            print_table(f"{name.upper()} ({len(kept)} models, seeds {args.seeds}: mean, lowest, highest{check})",
                        {f"{rule} {stat}": results[name]["summary"][rule][stat] for rule in rules
                         for stat in ("mean", "min", "max")})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = {"overrides": parse_overrides(args.set), "seeds": seeds if args.seeds else None, "quick": args.quick,
           "environment": environment(), "sets": results}
    args.out.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
