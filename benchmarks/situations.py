"""Plants as they really send data (issue 12): stops, gateway outages and jitter, with and without a fault.

One run:
  1. `vigil simulate` writes two days of normal history of the same 5 pumps that
     stop every day at 02:00 UTC for an hour; `vigil train` trains on it twice with the defaults: once as
     given (no off condition: stops are learned as "normal"), once with the off condition
     training suggested (read from its warning) and the default settle time (60 s), and once
     with that condition and the settle time the second training suggests (its warning: the
     simulated pumps' temperature cools during a stop and takes minutes to come back);
  2. `vigil simulate` writes one day of 5 pumps, with a bearing fault on pump-3 from 14:00
     for 6 h, in four plants:
       clean       no stops, no outages;
       situations  the same pumps stopping every day at 02:00 for an hour, one two-hour gateway
                   outage per pump (pump-3's before its fault), readings jittered by +-0.2 s;
       and both again without the fault;
  3. every plant's readings are fed, in time order across pumps, in batches of 100, through
     detector.pipeline.Pipeline (what `vigil serve` runs on every batch it polls, without
     Kafka) with each model, and the alert events counted: alerts opened outside the fault
     (false alerts), and the delay from the fault's start to the first open on pump-3: to
     the reading that met the alert rule, and to the batch that sent the open (a model with
     an off condition holds it back up to a minute).

    python benchmarks/situations.py --out bench-results/situations.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from detector.alerts import epoch_ms  # noqa: E402
from detector.artifact import load  # noqa: E402
from detector.datafiles import read_path  # noqa: E402
from detector.metrics import ServiceMetrics  # noqa: E402
from detector.pipeline import Pipeline, Record  # noqa: E402

FAULT = "pump-3:bearing@14h+6h"
STOP = "pump-*@02:00+1h"
OUTAGES = ("pump-1@4h+2h", "pump-2@8h+2h", "pump-3@10h+2h", "pump-4@16h+2h", "pump-5@20h+2h")
JITTER = "0.2"
BATCH = 100  # 20 s of the plant: the time an event is sent is known to that


def vigil(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vigil", *args], capture_output=True, text=True, check=True,
                          env=os.environ | {"JAX_PLATFORMS": "cpu"})


def simulate(out: Path, days: str, assets: int, fault: bool, situations: bool) -> Path:
    args = ["simulate", "--assets", str(assets), "--duration", days, "--out", str(out), "--quiet"]
    if fault:
        args += ["--fault", FAULT]
    if situations:
        args += ["--stop", STOP, "--jitter", JITTER]
        for o in OUTAGES[:assets]:
            args += ["--outage", o]
    vigil(*args)
    return out


def train(history: Path, out: Path, off_condition: str | None, settle: float | None = None) -> tuple[Path, str]:
    args = ["train", "--data", str(history), "--out", str(out), "--label-column", "anomaly", "--quiet"]
    if off_condition:
        args += ["--off-condition", off_condition]
    if settle is not None:
        config = out.with_suffix(".toml")
        config.write_text(f"[training]\noff_settle_seconds = {settle}\n")
        args += ["--config", str(config)]
    return out, vigil(*args).stderr


def feed(model_dir: Path, plant: Path) -> dict:
    """The plant's readings through the daemon's pipeline; its alert events, summarised."""
    model = load(model_dir)
    tables = read_path(plant, label_column="anomaly")
    readings = []
    for t in tables:
        asset = Path(t.path).stem
        names = t.sensors
        for ts, row in zip(t.times_ms().tolist(), t.values.tolist()):
            readings.append((ts, asset, row))
    readings.sort(key=lambda r: r[0])
    records = [Record("r", 0, i, a.encode(), json.dumps(
        {"asset": a, "ts": ts, "values": {n: (None if v != v else v) for n, v in zip(names, row)}}).encode(), ts)
        for i, (ts, a, row) in enumerate(readings)]
    registry = CollectorRegistry()
    pipeline = Pipeline(model, ServiceMetrics(registry))
    events, sent = [], {}  # sent: alert id -> reading time of the batch that sent its open
    t0 = time.perf_counter()
    for lo in range(0, len(records), BATCH):
        result = pipeline.process(records[lo:lo + BATCH], now_ms=readings[-1][0])
        events += result.alerts
        newest = readings[min(lo + BATCH, len(readings)) - 1][0]
        sent.update((e.alert_id, newest) for e in result.alerts if e.type == "open")
    seconds = time.perf_counter() - t0
    faults = json.loads((plant / "faults.json").read_text()).get("faults", [])
    spans = {(f["asset"], epoch_ms(f["start"]), epoch_ms(f["end"])) for f in faults}
    opens = [e for e in events if e.type == "open"]

    def in_fault(e):
        return any(a == e.asset and s <= epoch_ms(e.time) <= end for a, s, end in spans)

    found = [min((e for e in opens if e.asset == a and s <= epoch_ms(e.time) <= end),
                 key=lambda e: epoch_ms(e.time), default=None) for a, s, end in spans]
    delays = [None if e is None else (epoch_ms(e.time) - s, sent[e.alert_id] - s)
              for e, (_, s, _) in zip(found, spans)]
    return {"readings": len(records), "seconds": round(seconds, 1),
            "alerts_opened": len(opens), "false_alerts": sum(not in_fault(e) for e in opens),
            "false_alert_assets": sorted({e.asset for e in opens if not in_fault(e)}),
            "resolved_switched_off": sum(e.type == "resolve" and e.reason == "switched_off" for e in events),
            "fault_delay_seconds": None if not delays or delays[0] is None else delays[0][0] / 1000,
            "fault_sent_after_seconds": None if not delays or delays[0] is None else delays[0][1] / 1000,
            "windows_mostly_missing": registry.get_sample_value("vigil_windows_mostly_missing_total"),
            "scored": registry.get_sample_value("vigil_readings_scored_total")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench-results/situations.json"))
    p.add_argument("--work", type=Path, help="working directory (default: a temporary one)")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vigil-situations-"))
    history = work / "history"  # the same pumps' two days before (as the live demo's history)
    vigil("simulate", "--assets", "5", "--duration", "2d", "--start", "2025-12-30T00:00:00Z",
          "--out", str(history), "--stop", STOP, "--quiet")
    t0 = time.perf_counter()
    plain, warning = train(history, work / "model-plain", None)
    found = re.search(r"consider off_condition = '([^']+)'", warning)
    suggested = found.group(1) if found else None
    print(f"trained without an off condition ({time.perf_counter() - t0:.0f} s); suggested: {suggested}")
    with_off, warning = train(history, work / "model-off", suggested) if suggested else (None, "")
    found = re.search(r"consider off_settle_seconds = ([\d.]+)", warning)
    settle = float(found.group(1)) if found else None
    print(f"trained with {suggested!r}; suggested off_settle_seconds: {settle}")
    settled, _ = train(history, work / "model-off-settle", suggested, settle) if settle else (None, "")
    plants = {
        "clean": simulate(work / "clean", "1d", 5, fault=True, situations=False),
        "situations": simulate(work / "situations", "1d", 5, fault=True, situations=True),
        "clean, no fault": simulate(work / "clean-nofault", "1d", 5, fault=False, situations=False),
        "situations, no fault": simulate(work / "situations-nofault", "1d", 5, fault=False, situations=True),
    }
    models = {"no off condition": plain} | ({f"off: {suggested}": with_off} if with_off else {}) | \
        ({f"off, settle {settle:g} s": settled} if settled else {})
    rows = []
    for model_name, model_dir in models.items():
        for plant_name, plant in plants.items():
            r = feed(model_dir, plant)
            rows.append({"model": model_name, "plant": plant_name} | r)
            print(f"{model_name:28s} {plant_name:22s} opened {r['alerts_opened']:3d}  false {r['false_alerts']:3d}  "
                  f"delay {r['fault_delay_seconds']} (sent after {r['fault_sent_after_seconds']})  "
                  f"switched-off resolves {r['resolved_switched_off']}  "
                  f"({r['seconds']} s)", flush=True)
    result = {"suggested_off_condition": suggested, "suggested_off_settle_seconds": settle, "fault": FAULT, "stop": STOP, "outages": OUTAGES,
              "jitter_seconds": float(JITTER), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
