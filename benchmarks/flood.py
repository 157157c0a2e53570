"""Memory under a flood of unique asset ids (an attacker, or a misconfigured producer).

Every scenario runs the daemon's pipeline (detector.pipeline, the default model size:
window 60, 7 sensors) in a fresh subprocess and reports its peak resident memory:

  baseline   the same number of readings from 50 well-behaved assets
  flood      every reading from a new asset id, with the default cap (max_assets 100,000)
  flood-10k  the same flood with max_assets 10,000

    python benchmarks/flood.py --readings 300000 --out bench-results/flood.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T0 = 1_795_460_400_000
SCENARIOS = {"baseline": (50, 100_000), "flood": (None, 100_000), "flood-10k": (None, 10_000)}
SENSORS = ("vibration_x", "vibration_y", "motor_current", "voltage", "pressure", "temperature", "flow")


def run_scenario(name: str, readings: int, batch: int = 5000) -> dict:
    import numpy as np
    from flax import nnx
    from prometheus_client import CollectorRegistry

    from detector.alerts import AlertPolicy
    from detector.artifact import TrainedModel
    from detector.metrics import ServiceMetrics
    from detector.model import VAE, ModelConfig
    from detector.pipeline import Pipeline, Record
    from detector.preprocessing import Scaler
    from detector.threshold import Threshold

    assets, cap = SCENARIOS[name]
    cfg = ModelConfig()
    model = TrainedModel(SENSORS, cfg, Scaler(np.zeros(7, np.float32), np.ones(7, np.float32)),
                         VAE(cfg, 7, rngs=nnx.Rngs(0)), Threshold(1.0, "quantile"), version="bench")
    registry = CollectorRegistry()
    pipeline = Pipeline(model, ServiceMetrics(registry), AlertPolicy(), max_assets=cap)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    values = json.dumps(dict(zip(SENSORS, [1.0] * 7)))
    t0 = time.perf_counter()
    for first in range(0, readings, batch):
        records = []
        for i in range(first, min(first + batch, readings)):
            asset = f"pump-{i % assets}" if assets else f"attacker-{i:09d}"
            ts = T0 + (i // assets if assets else 0) * 1000
            value = f'{{"asset": "{asset}", "ts": {ts}, "values": {values}}}'.encode()
            records.append(Record("t", 0, i, asset.encode(), value, ts))
        pipeline.process(records, now_ms=T0 + readings * 1000)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"scenario": name, "readings": readings, "max_assets": cap, "assets_tracked": len(pipeline.windows),
            "assets_evicted": int(registry.get_sample_value("vigil_assets_evicted_total")),
            "peak_rss_mib": round(peak / 1024, 1), "rss_growth_mib": round((peak - before) / 1024, 1),
            "readings_per_s": round(readings / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--out", default="bench-results/flood.json")
    parser.add_argument("--scenario", help=argparse.SUPPRESS)  # internal: run one scenario in this process
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(run_scenario(args.scenario, args.readings)))
        return
    results = []
    for name in SCENARIOS:
        out = subprocess.run([sys.executable, __file__, "--scenario", name, "--readings", str(args.readings)],
                             check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'scenario':<11}{'readings':>10}{'max_assets':>12}{'tracked':>9}{'evicted':>9}"
          f"{'peak RSS MiB':>14}{'growth MiB':>12}{'readings/s':>12}")
    for r in results:
        print(f"{r['scenario']:<11}{r['readings']:>10}{r['max_assets']:>12}{r['assets_tracked']:>9}"
              f"{r['assets_evicted']:>9}{r['peak_rss_mib']:>14}{r['rss_growth_mib']:>12}{r['readings_per_s']:>12}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
