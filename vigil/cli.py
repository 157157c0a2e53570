"""`vigil` command line: thin wrappers that parse arguments and call library functions."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EXAMPLES = {
    "train": "examples:\n  vigil train --data history/normal.csv --out models/pump-v1 --window 60 --epochs 100\n"
             "  vigil train --data history/ --registry models/ --promote",
    "score": "example:\n  vigil score --model models/pump-v1 --data today.csv --out scores.csv",
    "evaluate": "example:\n  vigil evaluate --model models/pump-v1 --data labelled/ --label-column anomaly --json eval.json",
    "demo": "example:\n  vigil demo --workdir vigil-demo",
    "models": "examples:\n  vigil models list --registry models/\n  vigil models show 20261123T190000Z-1a2b3c4d --registry models/\n"
              "  vigil models promote 20261123T190000Z-1a2b3c4d --registry models/\n  vigil models rollback --registry models/",
    "serve": "example:\n  vigil serve --model models/pump-v1 --bootstrap-servers 127.0.0.1:9092 --topic vigil.readings\n\n"
             "Every option can also be set as VIGIL_<NAME> (e.g. VIGIL_ALERTS_TOPIC) or under [serve] in\n"
             "--config FILE.toml; precedence: flag > environment > file > default.",
}


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="a CSV file or a directory of CSV files")
    p.add_argument("--time-column", help="name of the time column (default: the first column)")
    p.add_argument("--label-column", help="label column left out of the sensors (default: 'anomaly' when present)")
    p.add_argument("--drop-columns", default="", help="comma-separated columns to ignore")


def _read(args):
    from detector.csvdata import read_path

    drop = tuple(c for c in args.drop_columns.split(",") if c)
    return read_path(args.data, time_column=args.time_column, label_column=args.label_column, drop_columns=drop)


def _log(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def cmd_train(args) -> int:
    from detector.artifact import save
    from training.config import load_config
    from training.job import train_model
    from training.report import render_report

    config = load_config(args.config, window=args.window, epochs=args.epochs, seed=args.seed)
    if (args.out is None) == (args.registry is None):
        raise UserError("give exactly one of --out MODEL_DIR and --registry DIR")
    if args.promote and args.registry is None:
        raise UserError("--promote needs --registry")
    if args.out is not None and Path(args.out).exists():
        raise UserError(f"{args.out}: already exists; choose a new directory for the model")
    tables = _read(args)
    rows = sum(len(t.time) for t in tables)
    _log(args, f"training on {rows} rows from {len(tables)} file(s), {len(tables[0].sensors)} sensors, "
               f"window {config.model.window}")

    def progress(s):
        _log(args, f"epoch {s.epoch:3d}/{config.epochs}  loss {s.loss:9.4f}  val {s.val_loss:9.4f}  {s.seconds:6.2f}s")

    model, report = train_model(tables, config, progress)
    if args.registry is not None:
        from detector.artifact import new_version

        Path(args.registry).mkdir(parents=True, exist_ok=True)
        model.version = model.version or new_version(model)
        out = save(model, Path(args.registry) / model.version, extra=render_report(report))
    else:
        out = save(model, args.out, extra=render_report(report))
    t = model.threshold
    _log(args, f"stopped after {report['summary']['epochs_run']} epochs (best {report['summary']['best_epoch']}), "
               f"{report['summary']['seconds']:.1f}s")
    _log(args, f"threshold {t.value:.5g} ({t.method}), persistence {model.persistence.k} of {model.persistence.n}")
    print(f"model {model.version} written to {out}")
    if args.promote:
        from detector.registry import promote

        promote(args.registry, model.version)
        print(f"promoted {model.version}: now current in {args.registry}")
    return 0


def cmd_models(args) -> int:
    import json

    from detector import registry as reg

    if args.action == "list":
        try:
            current = reg.current_version(args.registry)
        except Exception:
            current = None
        names = reg.versions(args.registry)
        if not names:
            print(f"{args.registry}: no model versions yet (vigil train --registry {args.registry})")
        for name in names:
            config = json.loads((Path(args.registry) / name / "config.json").read_text())
            training = config.get("training", {})
            print(f"{'*' if name == current else ' '} {name}  created {config.get('created_at', '?')}  "
                  f"{len(config.get('sensors', []))} sensors  window {config.get('window')}  "
                  f"threshold {config['threshold']['value']:.4g} ({config['threshold']['method']})  "
                  f"trained on {training.get('rows', '?')} rows")
        return 0
    if args.action == "show":
        if not args.version:
            raise UserError("show needs a VERSION")
        from detector.artifact import load

        model = load(Path(args.registry) / args.version)
        print(json.dumps({"version": model.version, "sensors": list(model.sensors), "window": model.config.window,
                          "model": model.config.to_dict(), "threshold": model.threshold.to_dict(),
                          "persistence": model.persistence.to_dict(), **model.metadata}, indent=2))
        return 0
    if args.action == "promote":
        if not args.version:
            raise UserError("promote needs a VERSION")
        reg.promote(args.registry, args.version)
        print(f"promoted {args.version}: now current in {args.registry}")
        return 0
    version = reg.rollback(args.registry)
    print(f"rolled back: {version} is current again in {args.registry}")
    return 0


def cmd_score(args) -> int:
    from detector.artifact import load
    from detector.offline import write_scores

    model = load(args.model)
    tables = _read(args)
    t0 = time.perf_counter()
    rows = write_scores(model, tables, args.out)
    _log(args, f"scored {rows} rows in {time.perf_counter() - t0:.2f}s -> {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    import numpy as np

    from detector.artifact import load
    from detector.offline import score_tables
    from training.evaluation import evaluate

    model = load(args.model)
    tables = _read(args)
    missing = [t.path for t in tables if t.labels is None]
    if missing:
        raise UserError(f"{missing[0]}: no label column; pass --label-column NAME")
    results = list(score_tables(model, tables))
    starts = np.cumsum([0] + [len(t.time) for t, _ in results[:-1]])
    metrics = evaluate(
        np.concatenate([t.labels for t, _ in results]),
        np.concatenate([s.normalized for _, s in results]),
        np.concatenate([s.flags for _, s in results]),
        timestamps=np.concatenate([t.time for t, _ in results]),
        segments=starts,
    )
    metrics = {"model": model.version, "data": args.data, **metrics}
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{key.ljust(width)}  {shown}")
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


def cmd_demo(args) -> int:
    from vigil.demo import run_demo

    return run_demo(Path(args.workdir), quiet=args.quiet)


def cmd_serve(args) -> int:
    import logging

    from detector.settings import FIELDS, load_settings

    settings = load_settings({name: getattr(args, name, None) for name in FIELDS}, config=args.config)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from kafka.errors import KafkaError

    from detector.service import Service

    service = Service(settings)
    service.install_signal_handlers()
    try:
        service.connect()
    except OSError as e:
        service.close()
        raise UserError(f"cannot serve metrics on {settings.metrics_addr}: {e}") from None
    except KafkaError as e:
        service.close()
        raise UserError(f"cannot reach Kafka at {settings.bootstrap_servers}: {e} "
                        "(is the broker running? deploy/kafka/broker start runs a local one)") from None
    service.run()
    return 0


def _add_serve_options(p: argparse.ArgumentParser) -> None:
    from detector.settings import FIELDS, ServeSettings

    defaults = ServeSettings()
    p.add_argument("--config", help="TOML file with a [serve] table (also VIGIL_CONFIG)")
    for name, f in FIELDS.items():
        default = getattr(defaults, name)
        kind = type(default)
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, metavar=kind.__name__.upper(),
                       help=f"(default: {default!r})" if name != "model" else "model directory or model registry")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil", description="Predictive-maintenance anomaly detection for sensor streams.",
        epilog="run 'vigil COMMAND --help' for the options and an example of each command",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("train", "Train a VAE on normal sensor history, calibrate its threshold, write a model directory.")
    _add_data_options(p)
    p.add_argument("--out", help="model directory to create")
    p.add_argument("--registry", help="instead of --out: add the model as a new version of this registry")
    p.add_argument("--promote", action="store_true", help="with --registry: make the new version current")
    p.add_argument("--config", help="TOML file with [model], [training], [threshold], [alerting] settings")
    p.add_argument("--window", type=int, help="time steps per window (default 60)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 100; early stopping ends sooner)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_train)

    p = command("score", "Score every row of a CSV (or directory) with a model; write scores.csv.")
    _add_data_options(p)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--out", required=True, help="output CSV: timestamp,score,threshold,is_anomaly,top_sensors,...")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_score)

    p = command("evaluate", "Score labelled data and report detection metrics.")
    _add_data_options(p)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.set_defaults(func=cmd_evaluate)

    p = command("demo", "Generate a synthetic pump data set, train on its normal part, score it, print anomalies.")
    p.add_argument("--workdir", default="vigil-demo", help="where to write data, model and scores")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = command("models", "List, inspect, promote and roll back model versions in a registry.")
    p.add_argument("action", choices=["list", "show", "promote", "rollback"])
    p.add_argument("version", nargs="?", help="the version (show, promote)")
    p.add_argument("--registry", required=True, help="registry directory")
    p.set_defaults(func=cmd_models)

    p = command("serve", "Score sensor readings from Kafka per asset; produce alerts; export Prometheus metrics.")
    _add_serve_options(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from detector.artifact import ArtifactError
    from detector.csvdata import DataError
    from detector.settings import SettingsError
    from training.config import ConfigError

    try:
        return args.func(args)
    except (UserError, DataError, ArtifactError, ConfigError, SettingsError) as e:
        print(f"vigil {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vigil {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
