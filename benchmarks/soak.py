"""Crash-and-restart soak on the local broker (deploy/kafka/broker start): 100,000 readings
of 50 assets streamed while `vigil serve` is killed with SIGKILL 10 times at random moments
and restarted; then committed offsets, readings scored at least once (from the scores
topic) and alert ids are compared with an uninterrupted run of the same pipeline.

    python benchmarks/soak.py --readings 100000 --assets 50 --kills 10 --out bench-results/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kafka_util import train_tiny_model  # noqa: E402
from tests.soak import run_soak  # noqa: E402



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--assets", type=int, default=50)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--rate", type=float, help="readings/s produced (default: spread over ~15 s per kill)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench-results/soak.json")
    args = parser.parse_args()
    rate = args.rate or args.readings / (15 * args.kills)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result = run_soak(train_tiny_model(tmp), tmp, args.assets, args.readings // args.assets, args.kills, rate, args.seed)
    summary = result.summary()
    width = max(map(len, summary))
    for key, value in summary.items():
        print(f"{key.ljust(width)}  {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    ok = result.missing_scores == 0 and result.committed == result.end and \
        result.reference_alerts <= result.alerts_opened
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
