"""Scoring throughput, in one run:

  1. the bare jitted forward pass of the default model (W=60, C=8): windows/s, the
     baseline (batches of 4096 windows already on device, encode + decode only);
  2. the jitted scoring kernel (scaling, masking, reconstruction, per-sensor errors);
  3. `vigil score` end to end on a 1,000,000-row CSV (a subprocess: start-up, reading,
     scoring, writing), rows/s, and its ratio to (1); the same rows as Parquet in and out;
     plus an in-process breakdown.

    python benchmarks/scoring.py --rows 1000000 --out bench-results/scoring.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from detector.artifact import TrainedModel, load, save  # noqa: E402
from detector.csvdata import read_csv  # noqa: E402
from detector.model import VAE, ModelConfig  # noqa: E402
from detector.offline import ScoresWriter, score_columns, score_table  # noqa: E402
from detector.preprocessing import Scaler  # noqa: E402
from detector.threshold import Persistence, Threshold  # noqa: E402

SENSORS = 8
BATCH = 4096


def best_rate(fn, items: int, repeats: int = 7, min_seconds: float = 0.3) -> float:
    """Items per second of the fastest of several timed loops."""
    fn()  # compile / warm up
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
        rates.append(n * items / elapsed)
    return max(rates)


def make_model(directory: Path) -> Path:
    config = ModelConfig()  # the default architecture
    vae = VAE(config, SENSORS, rngs=nnx.Rngs(0))
    scaler = Scaler(np.zeros(SENSORS, np.float32), np.ones(SENSORS, np.float32))
    model = TrainedModel(tuple(f"s{i}" for i in range(SENSORS)), config, scaler, vae,
                         Threshold(10.0, "quantile"), Persistence(), interval_seconds=1.0)  # the CSV's spacing
    return save(model, directory / "model")


def make_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    start = np.datetime64("2026-01-01T00:00:00", "s")
    with open(path, "w") as f:
        f.write("timestamp," + ",".join(f"s{i}" for i in range(SENSORS)) + "\n")
        for lo in range(0, rows, 100_000):
            n = min(100_000, rows - lo)
            ts = (start + np.arange(lo, lo + n)).astype(str)
            v = rng.normal(size=(n, SENSORS))
            body = np.char.add(ts.astype(object), ",")
            cols = [np.char.mod("%.5f", v[:, j]) for j in range(SENSORS)]
            lines = [t + ",".join(c) for t, c in zip(body, zip(*cols))]
            f.write("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--out", type=Path, default=Path("bench-results/scoring.json"))
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = make_model(tmp)
        model = load(model_dir)
        w = model.config.window
        rng = np.random.default_rng(1)
        windows = jnp.asarray(rng.normal(size=(BATCH, w, SENSORS)).astype(np.float32))
        mask = jnp.ones_like(windows)
        graphdef, state = nnx.split(model.vae)
        forward = jax.jit(lambda s, x, m: nnx.merge(graphdef, s).reconstruct(x, m))
        bare = best_rate(lambda: forward(state, windows, mask).block_until_ready(), BATCH)
        scorer = model.scorer()
        kernel = best_rate(lambda: scorer._score_windows(*scorer._state, windows)[0].block_until_ready(), BATCH)

        csv_path = tmp / "readings.csv"
        t0 = time.perf_counter()
        make_csv(csv_path, args.rows)
        print(f"generated {args.rows} rows ({csv_path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s",
              file=sys.stderr)
        out_csv = tmp / "scores.csv"
        vigil = [sys.executable, "-m", "vigil", "score", "--model", str(model_dir), "--data", str(csv_path),
                 "--out", str(out_csv), "--quiet"]
        t0 = time.perf_counter()
        subprocess.run(vigil, check=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
        e2e_seconds = time.perf_counter() - t0
        with open(out_csv) as f:
            written = sum(1 for _ in f) - 1
        assert written == args.rows, f"{written} rows written for {args.rows} input rows"

        # the same rows as Parquet, in and out
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = read_csv(csv_path)
        parquet_path = tmp / "readings.parquet"
        columns = {"timestamp": pa.array(table.time_raw)}
        columns.update({name: pa.array(table.values[:, j]) for j, name in enumerate(table.sensors)})
        pq.write_table(pa.table(columns), parquet_path)
        del table
        out_parquet = tmp / "scores.parquet"
        t0 = time.perf_counter()
        subprocess.run(vigil[:7] + [str(parquet_path), "--out", str(out_parquet), "--quiet"], check=True, cwd=ROOT,
                       env=os.environ | {"PYTHONPATH": str(ROOT)})
        parquet_seconds = time.perf_counter() - t0
        assert pq.read_metadata(out_parquet).num_rows == args.rows

        t0 = time.perf_counter()
        table = read_csv(csv_path)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = score_table(model, table)
        t_score = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = ScoresWriter(tmp / "again.csv")
        out.write(score_columns(table.time_raw, scores, model.threshold.value, model.sensors))
        out.close()
        t_format = time.perf_counter() - t0

    e2e = args.rows / e2e_seconds
    result = {
        "model": {"window": w, "sensors": SENSORS, "hidden": list(model.config.hidden), "latent": model.config.latent},
        "cpu_count": os.cpu_count(),
        "bare_forward_windows_per_s": round(bare),
        "scoring_kernel_windows_per_s": round(kernel),
        "vigil_score_rows": args.rows,
        "vigil_score_seconds": round(e2e_seconds, 2),
        "vigil_score_rows_per_s": round(e2e),
        "ratio_end_to_end_to_bare": round(e2e / bare, 3),
        "vigil_score_parquet_seconds": round(parquet_seconds, 2),
        "vigil_score_parquet_rows_per_s": round(args.rows / parquet_seconds),
        "ratio_parquet_to_bare": round(args.rows / parquet_seconds / bare, 3),
        "in_process_seconds": {"read": round(t_read, 2), "score": round(t_score, 2), "write": round(t_format, 2)},
    }
    print(f"\n{'measure':<48}{'rate':>14}")
    print(f"{'bare jitted forward pass (baseline)':<48}{bare:>12,.0f}/s  windows")
    print(f"{'scoring kernel (scale, mask, errors)':<48}{kernel:>12,.0f}/s  windows")
    print(f"{'vigil score end to end, ' + format(args.rows, ',') + ' rows':<48}{e2e:>12,.0f}/s  rows"
          f"  ({e2e_seconds:.1f}s, {e2e / bare:.2f} x baseline)")
    pq_rate = args.rows / parquet_seconds
    print(f"{'... the same rows as Parquet in and out':<48}{pq_rate:>12,.0f}/s  rows"
          f"  ({parquet_seconds:.1f}s, {pq_rate / bare:.2f} x baseline)")
    print(f"in-process breakdown (CSV): read {t_read:.2f}s, score {t_score:.2f}s, write {t_format:.2f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
