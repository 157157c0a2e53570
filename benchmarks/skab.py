"""SKAB outlier-detection benchmark (https://github.com/waico/SKAB), published protocol.

For each of the 34 labelled files: train on the first 400 rows, score the file. Reported:
  1. "notebook rule": the leaderboard's residual (sum over sensors of the mean absolute
     reconstruction error of a 60-step window) with UCL = 4/3 x its 0.999 quantile on the
     training windows, and the notebook's rule that flags row i when all windows covering
     it are over UCL; binary F1, FAR, MAR over all rows of all files, as published;
  2. "own threshold": Vigil's own score, threshold and persistence rule, evaluated on the
     test rows (row 400 onwards) only;
  3. the same two for a trivial baseline that reconstructs every window as zeros;
  4. threshold-free ROC-AUC of the window scores (score / threshold, pooled over files).

    python benchmarks/skab.py --data ../shared/data/skab --out bench-results/skab.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.csvdata import read_csv  # noqa: E402
from detector.preprocessing import windows  # noqa: E402
from detector.threshold import Persistence, calibrate, flag  # noqa: E402
from training.config import load_config, validation_start  # noqa: E402
from training.evaluation import evaluate, roc_auc  # noqa: E402
from training.job import train_model  # noqa: E402

TRAIN_ROWS, N_STEPS, Q, UCL_FACTOR = 400, 60, 0.999, 4 / 3
PUBLISHED = [("Conv-AE (published)", 0.78, 13.55, 28.02), ("LSTM-AE (published)", 0.74, 29.96, 25.92),
             ("LSTM-VAE (published)", 0.56, 9.13, 55.03)]


def skab_files(root: Path) -> list[Path]:
    files = [p for sub in ("valve1", "valve2", "other") for p in sorted((root / sub).glob("*.csv"))]
    if not files:
        raise SystemExit(f"no SKAB files under {root} (expected valve1/, valve2/, other/)")
    return files


def notebook_prediction(residuals: np.ndarray, ucl: float, rows: int) -> np.ndarray:
    """The SKAB notebooks' rule: row i is an outlier if windows i-59 .. i-1 are all over UCL."""
    over = residuals > ucl
    prediction = np.zeros(rows, np.int8)
    for i in range(N_STEPS - 1, len(residuals) - N_STEPS + 1):
        if over[i - N_STEPS + 1:i].all():
            prediction[i] = 1
    return prediction


def residuals(z: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Leaderboard residual per window: sum over sensors of mean |error| over time. z, recon: [n, W, C]."""
    return np.abs(z - recon).mean(axis=1).sum(axis=1)


def binary(labels: list[np.ndarray], predictions: list[np.ndarray]) -> dict:
    y, p = np.concatenate(labels).astype(bool), np.concatenate(predictions).astype(bool)
    tp, fp, fn, tn = (y & p).sum(), (~y & p).sum(), (y & ~p).sum(), (~y & ~p).sum()
    return {"f1": round(float(tp / (tp + (fn + fp) / 2)), 4), "far": round(float(100 * fp / (fp + tn)), 2),
            "mar": round(float(100 * fn / (fn + tp)), 2)}


def run(data: Path, config_path: str | None, limit: int | None) -> dict:
    config = load_config(config_path)
    if config.model.window != N_STEPS:
        print(f"note: window {config.model.window} (the notebooks use {N_STEPS})", file=sys.stderr)
    rows = {k: {"labels": [], "pred": []} for k in ("vae_notebook", "zero_notebook", "vae_own", "zero_own")}
    pooled_scores, pooled_zero, pooled_labels, per_file = [], [], [], []
    t0 = time.perf_counter()
    for path in skab_files(data)[:limit]:
        table = read_csv(path, drop_columns=("changepoint",))
        x = table.values
        labels = table.labels.astype(np.int8)
        train = dataclasses.replace(table, time_raw=table.time_raw[:TRAIN_ROWS], time=table.time[:TRAIN_ROWS],
                                    values=x[:TRAIN_ROWS], labels=None)
        model, report = train_model([train], config)
        w = model.config.window
        # 1. the notebook's residual and rule, with our model's reconstruction
        mask = np.isfinite(x)
        z = np.where(mask, (x - model.scaler.center) / model.scaler.scale, 0).astype(np.float32)
        zw = np.ascontiguousarray(windows(z, w))
        mw = np.ascontiguousarray(windows(mask.astype(np.float32), w))
        recon = np.asarray(model.vae.reconstruct(jnp.asarray(zw), jnp.asarray(mw)))
        res = residuals(zw, recon)
        ucl = np.quantile(res[:TRAIN_ROWS - w + 1], Q) * UCL_FACTOR
        rows["vae_notebook"]["pred"].append(notebook_prediction(res, ucl, len(x)))
        zero_res = residuals(zw, np.zeros_like(zw))
        zero_ucl = np.quantile(zero_res[:TRAIN_ROWS - w + 1], Q) * UCL_FACTOR
        rows["zero_notebook"]["pred"].append(notebook_prediction(zero_res, zero_ucl, len(x)))
        for k in ("vae_notebook", "zero_notebook"):
            rows[k]["labels"].append(labels)
        # 2. our own score, threshold and persistence rule, on the test rows
        scores = model.scorer().score_series(x)
        normalized = scores.score / model.threshold.value
        flags = flag(normalized, 1.0, model.persistence)
        rows["vae_own"]["pred"].append(flags[TRAIN_ROWS:])
        rows["vae_own"]["labels"].append(labels[TRAIN_ROWS:])
        # 3. zero baseline with the same calibration: score = mean squared z over the window
        zero_score = np.full(len(x), np.nan)
        zero_score[w - 1:] = ((zw ** 2) * mw).sum(axis=(1, 2)) / np.maximum(mw.sum(axis=(1, 2)), 1)
        split = validation_start(TRAIN_ROWS, w, config.validation_fraction)  # training's own split
        zero_thr = calibrate(zero_score[split + w - 1:TRAIN_ROWS], config.threshold_method,
                             **config.threshold_options())
        zero_norm = zero_score / zero_thr.value
        rows["zero_own"]["pred"].append(flag(zero_norm, 1.0, Persistence(config.persistence_k, config.persistence_n))[TRAIN_ROWS:])
        rows["zero_own"]["labels"].append(labels[TRAIN_ROWS:])
        pooled_scores.append(normalized[TRAIN_ROWS:])
        pooled_zero.append(zero_norm[TRAIN_ROWS:])
        pooled_labels.append(labels[TRAIN_ROWS:])
        m = evaluate(labels[TRAIN_ROWS:], normalized[TRAIN_ROWS:], flags[TRAIN_ROWS:])
        per_file.append({"file": f"{path.parent.name}/{path.name}", "roc_auc": m["roc_auc"],
                         "far": m["false_alarm_rate"], "mar": m["missed_alarm_rate"],
                         "epochs": report["summary"]["epochs_run"], "threshold": model.threshold.value})
        print(f"  {per_file[-1]['file']:<14} AUC {m['roc_auc'] or float('nan'):.3f}  FAR {100 * (m['false_alarm_rate'] or 0):5.1f} %"
              f"  MAR {100 * (m['missed_alarm_rate'] or 0):5.1f} %  ({report['summary']['seconds']:.1f}s)", file=sys.stderr)
    y = np.concatenate(pooled_labels)
    results = {k: binary(v["labels"], v["pred"]) for k, v in rows.items()}
    results["vae_own"]["roc_auc_pooled"] = roc_auc(y, np.concatenate(pooled_scores))
    results["zero_own"]["roc_auc_pooled"] = roc_auc(y, np.concatenate(pooled_zero))
    aucs = [f["roc_auc"] for f in per_file if f["roc_auc"] is not None]
    results["vae_own"]["roc_auc_mean_per_file"] = float(np.mean(aucs))
    return {"files": len(per_file), "seconds": round(time.perf_counter() - t0, 1), "config": config.to_dict(),
            "results": results, "per_file": per_file, "published": PUBLISHED}


def print_table(out: dict) -> None:
    r = out["results"]
    lines = [("Vigil VAE, notebook rule (all rows)", r["vae_notebook"]),
             ("zero baseline, notebook rule (all rows)", r["zero_notebook"]),
             ("Vigil VAE, own threshold + persistence (test rows)", r["vae_own"]),
             ("zero baseline, own threshold + persistence (test rows)", r["zero_own"])]
    print(f"\nSKAB outlier detection, {out['files']} files, {out['seconds']} s")
    print(f"{'method':<56}{'F1':>6}{'FAR %':>9}{'MAR %':>9}{'ROC-AUC':>9}")
    for name, f1, far, mar in out["published"]:
        print(f"{name:<56}{f1:>6.2f}{far:>9.2f}{mar:>9.2f}{'':>9}")
    for name, v in lines:
        auc = v.get("roc_auc_pooled")
        print(f"{name:<56}{v['f1']:>6.2f}{v['far']:>9.2f}{v['mar']:>9.2f}{(f'{auc:.3f}' if auc else ''):>9}")


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "skab"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default, help=f"SKAB data directory (default {default})")
    p.add_argument("--config", help="training config TOML (default: Vigil's defaults)")
    p.add_argument("--out", type=Path, default=Path("bench-results/skab.json"))
    p.add_argument("--limit", type=int, help="only the first N files (quick check)")
    args = p.parse_args()
    out = run(args.data, args.config, args.limit)
    print_table(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
