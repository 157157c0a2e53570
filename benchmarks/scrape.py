"""The cost of one /metrics scrape of a daemon with many assets, in one run:

  1. prometheus_client's generate_latest of the daemon's registry (the baseline: what the
     endpoint served before metrics.exposition);
  2. metrics.exposition (what the endpoint serves: the per-asset gauges written in one pass);
  3. both again for the same assets spread over 5 routes (Merged adds the model label).

The daemon's loop waits for the GIL while a scrape formats, so this is time the loop loses
on every scrape. Best of --repeats.

    python benchmarks/scrape.py --assets 5000 --sensors 8 --out bench-results/scrape.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.exposition import generate_latest  # noqa: E402

from detector.metrics import Merged, ServiceMetrics, exposition  # noqa: E402


def filled(assets: list[str], sensors: int, rng) -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    metrics.per_asset.set_sensors(tuple(f"sensor_{j}" for j in range(sensors)))
    n = len(assets)
    metrics.per_asset.update(assets, rng.random(n), rng.random(n), (rng.random(n) < 0.01).astype(float),
                             rng.dirichlet(np.ones(sensors), n))
    metrics.readings.inc(n)
    return registry


def best(fn, repeats: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        size = len(fn())
        times.append(time.perf_counter() - t0)
    return min(times), size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assets", type=int, default=5000)
    p.add_argument("--sensors", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("bench-results/scrape.json"))
    args = p.parse_args()

    rng = np.random.default_rng(0)
    assets = [f"pump-{i:05d}" for i in range(args.assets)]
    one = filled(assets, args.sensors, rng)
    routes = 5
    parts = [filled(assets[i::routes], args.sensors, rng) for i in range(routes)]
    merged = Merged([(r, {"model": f"route-{i}"}, lambda name: True) for i, r in enumerate(parts)])

    rows, result = [], {"assets": args.assets, "sensors": args.sensors, "cpu_count": os.cpu_count()}
    for label, collector in (("one model", one), (f"{routes} routes", merged)):
        assert exposition(collector) == generate_latest(collector), "the two writers disagree"
        base, size = best(lambda: generate_latest(collector), args.repeats)
        fast, _ = best(lambda: exposition(collector), args.repeats)
        rows.append((label, base, fast, size))
        key = label.replace(" ", "_")
        result[key] = {"generate_latest_s": round(base, 4), "exposition_s": round(fast, 4),
                       "speedup": round(base / fast, 2), "bytes": size}

    series = args.assets * (3 + args.sensors)
    print(f"\n/metrics of {args.assets:,} assets x {args.sensors} sensors ({series:,} per-asset series), best of "
          f"{args.repeats}")
    print(f"{'daemon':<12}{'generate_latest':>18}{'exposition':>14}{'speed-up':>10}{'size':>10}")
    for label, base, fast, size in rows:
        print(f"{label:<12}{base * 1000:>15.0f} ms{fast * 1000:>11.0f} ms{base / fast:>9.1f}x{size / 1e6:>8.1f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
