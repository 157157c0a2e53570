"""The demo: synthetic pump data in, a trained model and the anomalies it finds out."""

from __future__ import annotations

import sys
from pathlib import Path

from vigil import synthetic

TRAIN_ROWS, TEST_ROWS = 8000, 3000
TEST_FAULTS = (("bearing", 900, 400), ("cavitation", 2000, 200), ("stuck", 2600, 150))


def run_demo(workdir: Path, quiet: bool = False) -> int:
    from detector.artifact import load, save
    from detector.csvdata import read_csv
    from detector.offline import score_table, write_scores
    from training.config import load_config
    from training.evaluation import evaluate
    from vigil.report import find_alerts
    from training.job import train_model
    from training.report import render_report

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    workdir.mkdir(parents=True, exist_ok=True)
    train_csv = synthetic.write_csv(workdir / "normal.csv", *synthetic.generate(TRAIN_ROWS, seed=1)[:1])
    test_csv = synthetic.write_csv(workdir / "test.csv", *synthetic.generate(TEST_ROWS, seed=2, faults=TEST_FAULTS))
    say(f"demo: wrote {TRAIN_ROWS} normal rows to {train_csv} and {TEST_ROWS} rows with "
        f"{len(TEST_FAULTS)} injected faults to {test_csv}")

    config = load_config(epochs=40)
    say("demo: training (JAX/Flax VAE, window 60)...")
    model, report = train_model([read_csv(train_csv)], config,
                                lambda s: say(f"  epoch {s.epoch:2d}  loss {s.loss:8.4f}  val {s.val_loss:8.4f}"))
    model_dir = workdir / "model"
    if model_dir.exists():
        import shutil
        shutil.rmtree(model_dir)
    save(model, model_dir, extra=render_report(report))
    model = load(model_dir)
    say(f"demo: model {model.version} -> {model_dir} (threshold {model.threshold.value:.4g}, {model.threshold.method})")

    table = read_csv(test_csv)
    write_scores(model, [table], workdir / "scores.csv")
    scores = score_table(model, table)
    print(f"anomalies found in {test_csv} (scores in {workdir / 'scores.csv'}):")
    print(f"{'from':<22}{'to':<22}{'peak score/threshold':>22}  top sensors")
    for alert in find_alerts(scores, model.sensors):
        names = ", ".join(f"{name} {share:.0%}" for name, share in alert.top)
        print(f"{table.time_raw[alert.start]:<22}{table.time_raw[alert.stop - 1]:<22}"
              f"{alert.peak_normalized:>22.2f}  {names}")
    m = evaluate(table.labels, scores.normalized, scores.flags)
    print(f"injected faults: {m['events']}, detected: {m['events_detected']}, "
          f"false-alarm episodes: {m['false_alarm_episodes']}, false-alarm rate: {m['false_alarm_rate']:.1%}")
    return 0
