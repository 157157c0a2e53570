"""What a rebalance costs in records processed twice, on the local broker (deploy/kafka/broker
start): readings of many assets are streamed at a steady rate into a 4-partition topic while
one `vigil serve` runs; a second daemon joins the same group a third of the way in (the first
gives up half of its partitions). Every live reading counts once in
a daemon's vigil_readings_consumed_total, so the two daemons' sum minus the readings produced
is what was processed twice: the records the first owner had processed but not committed when
its partitions were revoked. This is what committing on revocation could save (the daemon does
not: see detector.service._Rebalance).

    python benchmarks/rebalance.py --trials 3 --out bench-results/rebalance.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kafka_util import Serve, broker_reachable, train_tiny_model, unique  # noqa: E402
from tests.soak import committed_and_end, fleet_messages, make_topics, produce_paced  # noqa: E402


def consumed(serve: Serve) -> float:
    return serve.metrics().get("vigil_readings_consumed_total", 0.0)


def trial(model: Path, assets: int, per_asset: int, rate: float, workdir: Path) -> dict:
    topics = make_topics(unique("rebalance"), 4)
    group = unique("group")
    messages = fleet_messages(assets, per_asset)
    flags = ["--batch-size", "500", "--rewind-seconds", "60"]
    a = Serve(model, topics["topic"], group, flags, log_path=workdir / "a.log")
    b = None
    try:
        a.wait_for(lambda m: m.get("vigil_broker_up") == 1, what="first daemon up")
        done = threading.Event()
        threading.Thread(target=produce_paced, args=(messages, topics["topic"], rate, done), daemon=True).start()
        seconds = len(messages) / rate
        time.sleep(seconds / 3)
        b = Serve(model, topics["topic"], group, flags, log_path=workdir / "b.log")  # joins: a rebalance
        done.wait(timeout=seconds * 3)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # both caught up and committed
            committed, end = committed_and_end(topics["topic"], group)
            if committed == end:
                break
            time.sleep(0.5)
        time.sleep(1.0)
        first, second = consumed(a), consumed(b)
        total = first + second
        return {"readings": len(messages), "consumed_first": first, "consumed_second": second,
                "processed_twice": int(total - len(messages)), "committed_equals_end": committed == end}
    finally:
        for s in (a, b):
            if s is not None:
                s.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--assets", type=int, default=100)
    ap.add_argument("--per-asset", type=int, default=300)
    ap.add_argument("--rate", type=float, default=1000.0, help="readings per second")
    ap.add_argument("--out", type=Path, default=Path("bench-results/rebalance.json"))
    args = ap.parse_args()
    if not broker_reachable():
        sys.exit("no Kafka broker: deploy/kafka/broker start")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = train_tiny_model(tmp)
        results = [trial(model, args.assets, args.per_asset, args.rate, tmp) for _ in range(args.trials)]
    print(f"\n{'trial':<7}{'readings':>10}{'first':>10}{'second':>10}{'twice':>8}  committed = end")
    for i, r in enumerate(results, 1):
        print(f"{i:<7}{r['readings']:>10,}{r['consumed_first']:>10,.0f}{r['consumed_second']:>10,.0f}"
              f"{r['processed_twice']:>8,}  {r['committed_equals_end']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rate": args.rate, "trials": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
