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
    "inspect": "examples:\n  vigil inspect --data history/normal.csv\n"
               "  vigil inspect --data history/ --json quality.json --html quality.html --window 120\n\n"
               "Prints one line per finding (warning or note) with the file, column and lines, then the counts;\n"
               "exit status 0 whatever it finds (2 when the data cannot be read).",
    "score": "example:\n  vigil score --model models/pump-v1 --data today.csv --out scores.csv",
    "evaluate": "example:\n  vigil evaluate --model models/pump-v1 --data labelled/ --label-column anomaly --json eval.json",
    "report": "examples:\n  vigil report --model models/pump-v1 --data today.csv --out report.html\n"
              "  vigil report --model models/pump-v1 --data today.csv --out night.png \\\n"
              "      --from 2026-11-23T00:00 --to 2026-11-23T06:00",
    "demo": "examples:\n  vigil demo                       # live: needs a Kafka broker (scripts/demo starts one)\n"
            "  vigil demo --assets 5 --fault pump-4:bearing@2m+10m --duration 600\n"
            "  vigil demo --offline             # no Kafka: train, score a file, list the anomalies",
    "models": "examples:\n  vigil models list --registry models/\n  vigil models show 20261123T190000Z-1a2b3c4d --registry models/\n"
              "  vigil models promote 20261123T190000Z-1a2b3c4d --registry models/\n  vigil models rollback --registry models/\n"
              "  vigil models shadow 20261124T020000Z-5e6f7a8b --registry models/   (scored live beside current, silently)\n"
              "  vigil models compare --registry models/ --bootstrap-servers kafka:9092\n"
              "  vigil models shadow --clear --registry models/",
    "label": "examples:\n  vigil label 5f1c0e8a9b7d2c41 false_alarm --note 'new impeller fitted' "
             "--bootstrap-servers kafka:9092\n  vigil label 5f1c0e8a9b7d2c41 confirmed --by j.doe --bootstrap-servers kafka:9092",
    "retrain": "examples:\n  vigil retrain --registry models/ --bootstrap-servers kafka:9092 --topic vigil.readings --since 7d\n"
               "  vigil retrain --registry models/ --data recent/ --labels incidents/\n\n"
               "exit status: 0 the challenger was promoted, 3 the current model was kept, 2 an error.",
    "simulate": "examples:\n"
                "  vigil simulate --assets 5 --duration 7d --out sim/ --fault pump-3:bearing@2d+12h "
                "--fault pump-1:stuck/pressure@5d+1h\n"
                "  vigil simulate --assets 5 --bootstrap-servers 127.0.0.1:9092 --fault pump-2:bearing@1m+10m\n"
                "  vigil simulate --assets 3 --bootstrap-servers 127.0.0.1:9092 --speed max --duration 1d "
                "--start 2026-01-01T00:00:00Z\n\n"
                "fault SPEC: ASSET:KIND[/SENSOR]@START+DURATION, START counted from the first reading\n"
                "  bearing     wear: vibration_x, vibration_y and temperature ramp up over the fault\n"
                "  cavitation  pressure and flow drop, vibration_x bursts\n"
                "  stuck       pressure and flow (or /SENSOR) stay at their value at START\n"
                "  dropout     flow (or /SENSOR) missing: an empty CSV cell, null in Kafka\n"
                "  step        motor_current (or /SENSOR) steps up\n"
                "  durations: 90s, 30m, 2h, 1d, 1w, 1.5h (a bare number is seconds); e.g.\n"
                "  --fault pump-3:bearing@2h+30m --fault pump-1:dropout/temperature@1d+10m\n"
                "Rows inside a fault are labelled anomaly = 1. Times are simulated time: at --speed 10\n"
                "a fault @10m starts one wall-clock minute after the start.\n\n"
                "normal operation (labelled anomaly = 0, recorded in faults.json); ASSETS is a name or a\n"
                "pattern such as 'pump-*' or 'pump-[13]':\n"
                "  --stop ASSETS@HH:MM+DURATION    switched off every day at HH:MM UTC (ASSETS@START+DURATION:\n"
                "                                  once): current, flow and vibration near zero, 30 s ramps\n"
                "  --outage ASSETS@START+DURATION  gateway down: no rows, no messages\n"
                "  --jitter SECONDS                reading times within +-SECONDS of the grid, still in order\n"
                "  --clock-step ASSETS@START-STEP  the clock goes back by STEP: the file repeats that time\n"
                "                                  (Kafka: readings carry the stepped times too)\n"
                "  --slow-sensor SENSOR/FACTOR     the sensor reports every FACTOR-th reading (empty/null between)\n"
                "  e.g. vigil simulate --assets 3 --duration 3d --out sim/ --stop 'pump-*@22:00+6h' \\\n"
                "         --outage pump-2@30h+2h --jitter 0.2 --clock-step pump-1@50h-55m --slow-sensor temperature/10",
    "replay": "examples:\n  vigil replay sim/pump-3.csv --speed 10\n"
              "  vigil replay history.csv --asset pump-7 --bootstrap-servers 127.0.0.1:9092 --speed max --rebase\n\n"
              "Each row becomes one reading message keyed by the asset (batches at --speed max), with the\n"
              "row's time, or with --rebase moved so that the first row is now; empty cells are sent as null.",
    "serve": "example:\n  vigil serve --model models/pump-v1 --bootstrap-servers 127.0.0.1:9092 --topic vigil.readings\n\n"
             "Every option can also be set as VIGIL_<NAME> (e.g. VIGIL_ALERTS_TOPIC) or under [serve] in\n"
             "--config FILE.toml; precedence: flag > environment > file > default.\n\n"
             "Several models in one daemon: [[serve.routes]] tables in the --config file map assets to models\n"
             "(name, model, assets = [\"pump-*\"] and/or assets_file; first match wins; see README, routes).",
}


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="a CSV or Parquet file, or a directory of them")
    p.add_argument("--time-column", help="name of the time column (default: the first column)")
    p.add_argument("--label-column", help="label column left out of the sensors (default: 'anomaly' when present)")
    p.add_argument("--drop-columns", default="", help="comma-separated columns to ignore")
    _add_strict_time(p)


def _add_strict_time(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict-time", action="store_true",
                   help="refuse a file whose time goes backwards (default: skip rows whose time is not after "
                        "the row before, with one warning per file)")


def _data_options(args) -> dict:
    """The reading options of the --data options (_add_data_options), for read_path / read_file."""
    return dict(time_column=args.time_column, label_column=args.label_column,
                drop_columns=tuple(c for c in args.drop_columns.split(",") if c), strict_time=args.strict_time)


def _read(args, warn: bool = True):
    """The --data tables (rows a little late are put back by _admit_late, once the interval is known)."""
    from detector.datafiles import read_path

    tables = read_path(args.data, **_data_options(args))
    if warn:
        _warn_skipped(args, tables)
    return tables


def _model_and_files(args):
    """--model and --data (`vigil score`, `evaluate`, `report`), the files one at a time: returns
    the model and an iterator of the tables, each read (in a thread) while the one before it is
    used, so that at most two files' rows are in memory whatever the directory holds. The first
    file is read while the model loads (importing JAX and verifying the model take about as long
    as reading a large file; Arrow reads without the GIL); each table's rows a little late are
    put back with the model's interval. A bad file stops the command when its turn comes."""
    from concurrent.futures import ThreadPoolExecutor

    from detector.artifact import load
    from detector.datafiles import data_files, read_file

    files = data_files(args.data)
    options = _data_options(args)

    def read(path):
        return read_file(path, **options)

    pool = ThreadPoolExecutor(max_workers=1)
    reading = pool.submit(read, files[0])
    try:
        model = load(args.model)
    except BaseException:
        reading.cancel()
        pool.shutdown()
        raise

    def tables():
        nonlocal reading
        warned = False
        try:
            for i in range(len(files)):
                table = reading.result()
                reading = pool.submit(read, files[i + 1]) if i + 1 < len(files) else None
                [table] = _admit_late([table], model.interval_seconds)
                _warn_skipped(args, [table])
                warned = warned or _warn_interval(args, model, table)
                yield table
                del table  # (not kept while the next file is awaited)
        finally:
            if reading is not None:
                reading.cancel()
            pool.shutdown()

    return model, tables()


def _admit_late(tables, interval_seconds):
    from detector.table import admit_late

    return [admit_late(t, interval_seconds) for t in tables]


def _warn_skipped(args, tables) -> None:
    """One warning per file with rows left out for their time, one per file with late rows put
    back (shown even with --quiet)."""
    for t in tables:
        if t.skipped is not None:
            print(f"vigil {args.command}: warning: {t.skipped.describe(t.path)}", file=sys.stderr, flush=True)
        if t.late:
            rows = "1 row" if t.late == 1 else f"{t.late} rows"
            print(f"vigil {args.command}: warning: {t.path}: {rows} less than one interval late counted in the "
                  f"newest interval before them (their values averaged in, as the daemon takes late readings)",
                  file=sys.stderr, flush=True)


def _log(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def cmd_train(args) -> int:
    from detector.artifact import check_writable, save
    from training.config import load_config
    from training.job import train_model
    from training.report import render_report

    interval = None
    if args.interval is not None:
        from vigil.durations import parse_duration

        try:
            interval = parse_duration(args.interval)
        except ValueError as e:
            raise UserError(f"--interval: {e}") from None
        if not interval > 0:
            raise UserError(f"--interval {args.interval}: must be more than 0")
    config = load_config(args.config, window=args.window, epochs=args.epochs, seed=args.seed,
                         interval_seconds=interval, off_condition=args.off_condition)
    if (args.out is None) == (args.registry is None):
        raise UserError("give exactly one of --out MODEL_DIR and --registry DIR")
    if args.promote and args.registry is None:
        raise UserError("--promote needs --registry")
    if args.out is not None and Path(args.out).exists():
        raise UserError(f"{args.out}: already exists; choose a new directory for the model")
    check_writable(Path(args.registry) if args.registry is not None else Path(args.out).parent)  # before training
    tables = _read(args, warn=False)
    quality = _inspect(tables, config)  # the data as written
    from detector.sampling import infer_sampling

    tables = _admit_late(tables, config.interval_seconds or infer_sampling([t.time for t in tables]).interval_seconds)
    _warn_skipped(args, tables)
    _warn_quality(args, quality)
    if {f.path for f in quality.findings if f.check == "step_times"} == {t.path for t in tables}:
        # inspect's note on such times, said by train because they also set the threshold's rate
        print("vigil train: warning: the timestamps look like row numbers or offsets, not times (all before "
              "1971): they are taken as seconds, which sets the windows' interval and how many make a day for "
              "the threshold ([threshold] per_day); write the readings' real times, or set [threshold] risk",
              file=sys.stderr, flush=True)
    rows = sum(len(t.time) for t in tables)
    _log(args, f"training on {rows} rows from {len(tables)} file(s), {len(tables[0].sensors)} sensors, "
               f"window {config.model.window}")

    def progress(s):
        _log(args, f"epoch {s.epoch:3d}/{config.epochs}  loss {s.loss:9.4f}  val {s.val_loss:9.4f}  {s.seconds:6.2f}s")

    model, report = train_model(tables, config, progress)
    report["summary"] = report["summary"] | {"data_quality": quality.summary()}  # the report's, not config.json's
    if args.registry is not None:
        from detector.artifact import new_version

        model.version = model.version or new_version(model)
        out = save(model, Path(args.registry) / model.version, extra=render_report(report))
    else:
        out = save(model, args.out, extra=render_report(report))
    t = model.threshold
    _log(args, f"stopped after {report['summary']['epochs_run']} epochs (best {report['summary']['best_epoch']}), "
               f"{report['summary']['seconds']:.1f}s")
    largest = report["calibration_scores"].get("max")
    beyond = f", {t.value / largest:.2g} x the largest of {report['calibration_scores']['count']:,} validation scores" \
        if largest and largest > 0 else ""
    _log(args, f"threshold {t.value:.5g} ({_threshold_basis(t, model.interval_seconds)}{beyond}), "
               f"persistence {model.persistence.k} of {model.persistence.n}")
    _report_sampling(args, report["summary"])
    if model.off_condition is not None:
        _log(args, f"off condition {model.off_condition!r}: {report['summary']['off_rows']:,} of {rows:,} rows "
                   f"left out as switched off or settling (the {model.off_settle_seconds:g} s after a switch-on)")
        suggested = report["summary"].get("suggested_off_settle_seconds")
        if suggested:
            print(f"vigil train: warning: after a switch-on the model still scores the training data over threshold "
                  f"for up to {report['summary']['warm_up_seconds']:.0f} s (a warm-up), longer than the "
                  f"{model.off_settle_seconds:g} s of settling: every start would alert in service; consider "
                  f"off_settle_seconds = {suggested:g} ([training] in the TOML)", file=sys.stderr, flush=True)
    print(f"model {model.version} written to {out}")
    if args.promote:
        from detector.registry import promote

        promote(args.registry, model.version)
        print(f"promoted {model.version}: now current in {args.registry}")
    return 0


def _inspect(tables, config):
    from training.dataquality import inspect_tables

    return inspect_tables(tables, window=config.model.window, validation_fraction=config.validation_fraction,
                          init_quantile=config.init_quantile, off_condition=config.off_condition)


MAX_QUALITY_WARNINGS = 10


def _warn_quality(args, quality) -> None:
    """vigil train: the data-quality warnings (shown even with --quiet; at most MAX_QUALITY_WARNINGS, and
    not the skipped rows _read has warned about), and how many notes vigil inspect would add."""
    shown = [f for f in quality.warnings if f.check not in ("duplicate_times", "backward_times")]
    for f in shown[:MAX_QUALITY_WARNINGS]:
        print(f"vigil train: {f.describe()}", file=sys.stderr, flush=True)
    if len(shown) > MAX_QUALITY_WARNINGS:
        print(f"vigil train: warning: {len(shown) - MAX_QUALITY_WARNINGS} more data-quality warnings "
              f"(vigil inspect --data {args.data} lists them all)", file=sys.stderr, flush=True)
    if quality.notes:
        _log(args, f"{len(quality.notes)} data-quality note(s): vigil inspect --data {args.data} lists them")


def cmd_inspect(args) -> int:
    from training.config import load_config
    from training.dataquality import format_text

    if args.html is not None and Path(args.html).suffix.lower() != ".html":
        raise UserError(f"{args.html}: --html writes a page; name it *.html")
    config = load_config(args.config, window=args.window)
    tables = _read(args)
    quality = _inspect(tables, config)
    sys.stdout.write(format_text(quality))
    if args.json:
        Path(args.json).write_text(json.dumps(quality.to_dict(), indent=2) + "\n")
    if args.html:
        from vigil.inspect_page import write_page

        write_page(quality, tables, args.html)
    return 0


def _threshold_basis(t, interval: float | None) -> str:
    """How a threshold was chosen, for the training log: 'pot: risk 1.2e-05 per window, 1 a day at 1 s'."""
    from detector.sampling import duration

    if t.method != "pot" or "risk" not in t.details:
        return t.method
    text = f"pot: risk {t.details['risk']:.2g} per window"
    if "per_day" in t.details and interval:
        text += f", {t.details['per_day']:g} a day at {duration(interval)}"
    return text


def _report_sampling(args, summary: dict) -> None:
    from detector.sampling import Sampling, duration, other_rate

    data = Sampling(**summary["sampling"])
    if summary["interval_source"] == "data":
        _log(args, f"sampling interval {data.describe()}")
        return
    given = summary["interval_seconds"]
    _log(args, f"sampling interval {duration(given)} (given); the data's: {data.describe()}")
    if other_rate(data.interval_seconds, given):
        print(f"vigil train: warning: the data's readings are {duration(data.interval_seconds)} apart, not the "
              f"{duration(given)} given by --interval or interval_seconds", file=sys.stderr, flush=True)


def cmd_models(args) -> int:
    import json

    from detector import registry as reg
    from detector.artifact import ArtifactError, describe_change, load, verify
    from detector.sampling import duration

    if args.action == "list":
        registry = Path(args.registry)
        names = reg.versions(registry)
        try:
            current, problem = reg.current_version(registry), None
            if current not in names:
                problem = (f"{registry / reg.CURRENT} names version {current!r}, "
                           f"but {registry / current} is not a model version")
        except ArtifactError as e:
            current, problem = None, str(e)
        try:
            shadow = reg.shadow_version(registry)
        except ArtifactError as e:
            shadow = None
            print(f"vigil models: warning: {e}", file=sys.stderr)
        if not names:
            print(f"{args.registry}: no model versions yet (vigil train --registry {args.registry})")
        for name in names:
            try:  # a broken version is listed as such, it does not stop the listing
                verify(registry / name)
                config = json.loads((registry / name / "config.json").read_text())
                training, threshold = config.get("training", {}), config["threshold"]
                interval = config.get("interval_seconds")
                about = (f"created {config.get('created_at', '?')}  {len(config.get('sensors', []))} sensors  "
                         f"window {config.get('window')}  interval {duration(interval) if interval else '?'}  "
                         f"threshold {threshold['value']:.4g} ({threshold['method']})  "
                         f"trained on {training.get('rows', '?')} rows")
            except (ArtifactError, ValueError, KeyError, TypeError) as e:
                about = f"BROKEN: {e}"
            print(f"{'*' if name == current else 's' if name == shadow else ' '} {name}  {about}")
        if problem and os.path.lexists(registry / reg.CURRENT):
            print(f"vigil models: warning: {problem}", file=sys.stderr)
        elif problem and names:
            print("vigil models: note: no current model yet (vigil models promote VERSION)", file=sys.stderr)
        for path in reg.leftovers(registry):
            print(f"vigil models: note: {path}: left by an interrupted save or promotion (or one in progress); "
                  "never loaded, safe to delete when no vigil train or retrain is running", file=sys.stderr)
        return 0
    if args.action == "show":
        if not args.version:
            raise UserError("show needs a VERSION")
        model = load(Path(args.registry) / reg.check_version_name(args.version))
        print(json.dumps({"version": model.version, "sensors": list(model.sensors), "window": model.config.window,
                          "interval_seconds": model.interval_seconds, "off_condition": model.off_condition,
                          "model": model.config.to_dict(), "threshold": model.threshold.to_dict(),
                          "persistence": model.persistence.to_dict(), **model.metadata}, indent=2))
        return 0
    if args.action == "promote":
        if not args.version:
            raise UserError("promote needs a VERSION")
        try:
            serving = reg.load_current(args.registry)
        except ArtifactError:
            serving = None  # nothing (usable) to compare with
        model = reg.promote(args.registry, args.version)
        print(f"promoted {args.version}: now current in {args.registry}")
        for level, message in describe_change(serving, model) if serving is not None else ():
            print(f"vigil models: {'warning' if level == 'warning' else 'note'}: {message}", file=sys.stderr)
        return 0
    if args.action == "shadow":
        if args.clear == bool(args.version):
            raise UserError("shadow needs a VERSION, or --clear")
        if args.clear:
            old = reg.shadow_version(args.registry)
            reg.set_shadow(args.registry, None)
            print(f"shadow {old} cleared in {args.registry}" if old else f"{args.registry} had no shadow")
            return 0
        reg.set_shadow(args.registry, args.version)
        print(f"{args.version} is now the shadow in {args.registry}: a daemon serving it scores the live stream "
              "with it too, its would-be alerts on the shadow alerts topic")
        return 0
    if args.action == "compare":
        return _compare_shadow(args)
    version = reg.rollback(args.registry)
    print(f"rolled back: {version} is current again in {args.registry}")
    return 0


def _asset_patterns(args) -> tuple[str, ...]:
    """--assets 'pump-*,P-1[0-9]': the ids or globs (a route's), empty when not given."""
    return tuple(a.strip() for a in (args.assets or "").split(",") if a.strip())


def _shadow_period(registry) -> tuple[str, float]:
    """The registry's shadow version and how long it has been the shadow (seconds)."""
    from detector import registry as reg

    version = reg.shadow_version(registry)
    if version is None:
        raise UserError(f"{registry} has no shadow version (vigil models shadow VERSION --registry {registry})")
    since = reg.shadow_since(registry)
    if since is None:
        raise UserError(f"{Path(registry) / reg.HISTORY}: does not say when {version} became the shadow")
    return version, time.time() - since.timestamp()


def _kafka_options(bootstrap_servers: str, client_id: str) -> dict:
    from detector.kafka_client import KafkaAccessError, client_options, preflight, security_from_env

    security = security_from_env()  # VIGIL_KAFKA_*, as for every command
    try:
        preflight(security, bootstrap_servers)
    except KafkaAccessError as e:
        raise UserError(str(e)) from None
    return client_options(security, bootstrap_servers=bootstrap_servers, client_id=client_id)


def _beside_readings(args, kind: str) -> str:
    """The topic of `kind` (alerts, labels) beside the readings topic: --alerts-topic or
    --labels-topic when given, else TOPIC's prefix + .kind (vigil.readings -> vigil.alerts),
    else vigil.kind. One rule for the alerts that retrain leaves out of its training data and
    the alerts its shadow gate counts."""
    given = getattr(args, f"{kind}_topic", None)
    if given:
        return given
    topic = getattr(args, "topic", None)
    return (topic.rsplit(".", 1)[0] if topic else "vigil") + f".{kind}"


def _shadow_comparison(args, version: str, seconds: float) -> dict:
    from detector.settings import shadow_topic_of
    from training.shadow_gate import compare, read_opens

    if not args.bootstrap_servers:
        raise UserError("comparing with the shadow reads the alert topics: give --bootstrap-servers")
    alerts = _beside_readings(args, "alerts")
    shadow_topic = shadow_topic_of(alerts, args.shadow_alerts_topic or "")
    assets = _asset_patterns(args)
    now_ms = int(time.time() * 1000)
    current, shadow = read_opens(_kafka_options(args.bootstrap_servers, "vigil-compare"), alerts, shadow_topic,
                                 now_ms - int(seconds * 1000), now_ms + 1, assets,
                                 say=lambda m: print(f"vigil: note: {m}", file=sys.stderr))
    return compare(current, shadow)


def _compare_shadow(args) -> int:
    from training.shadow_gate import describe

    version, seconds = _shadow_period(args.registry)
    comparison = _shadow_comparison(args, version, seconds)
    for line in describe(comparison, version, seconds / 3600):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"shadow_version": version, "hours": seconds / 3600, **comparison}, indent=2)
                                   + "\n")
    return 0


def cmd_score(args) -> int:
    model, tables = _model_and_files(args)  # before importing the scorer: JAX loads while the data is read
    from detector.offline import write_scores

    t0 = time.perf_counter()
    summary = write_scores(model, tables, args.out)
    _log(args, f"scored {summary.rows:,} rows in {time.perf_counter() - t0:.2f}s -> {args.out}: {summary.describe()}")
    return 0


def _warn_interval(args, model, table) -> bool:
    """Warn when the data's readings are much further apart (or closer) than the model's interval:
    windows are laid on the model's grid (detector.grid), so 10 s data on a 1 s model leaves most
    of each window missing and unscored, and 0.1 s data is averaged per interval. True if it warned."""
    from detector.sampling import duration, infer_sampling, other_rate

    given = model.interval_seconds
    data = infer_sampling([table.time]).interval_seconds
    if not other_rate(data, given):
        return False
    effect = ("most of each window is missing, and a window with less than half of its cells observed "
              "is not scored") if data > given else "the readings in each interval are averaged"
    print(f"vigil {args.command}: warning: {table.path}: the readings are {duration(data)} apart, the model's "
          f"windows are {model.config.window} intervals of {duration(given)}: {effect}", file=sys.stderr, flush=True)
    return True


def cmd_evaluate(args) -> int:
    model, tables = _model_and_files(args)  # one file at a time, as vigil score
    from training.evaluation import evaluate_model

    def labelled(tables):
        for t in tables:
            if t.labels is None:
                raise UserError(f"{t.path}: no label column; pass --label-column NAME")
            yield t

    metrics = evaluate_model(model, labelled(tables))
    metrics = {"model": model.version, "data": args.data, **metrics}
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{key.ljust(width)}  {shown}")
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


def cmd_report(args) -> int:
    from vigil.report import ReportError, build_report, check_format, parse_time, write_report

    try:
        check_format(args.out)
        start, end = (None if t is None else parse_time(t) for t in (args.start, args.end))
        model, tables = _model_and_files(args)
        tables = list(tables)
        if len(tables) > 1:
            kind = "CSV" if all(t.path.lower().endswith(".csv") for t in tables) else "data"
            raise UserError(f"{args.data}: {len(tables)} {kind} files; a report covers one file "
                            f"(e.g. --data {tables[0].path})")
        t0 = time.perf_counter()
        report = build_report(model, tables[0], start, end)
        write_report(report, args.out)
    except ReportError as e:
        raise UserError(str(e)) from None
    _log(args, f"{len(report.alerts)} alert(s) in {report.table.rows} rows; "
               f"scored and drawn in {time.perf_counter() - t0:.2f}s -> {args.out}")
    return 0


def cmd_demo(args) -> int:
    if args.offline:
        from vigil.demo import run_demo

        return run_demo(Path(args.workdir), quiet=args.quiet)
    from vigil.live_demo import DemoError, run_live_demo

    try:
        return run_live_demo(Path(args.workdir), args.bootstrap_servers, args.assets, args.history, args.fault,
                             args.metrics_addr, args.duration)
    except DemoError as e:
        raise UserError(str(e)) from None


def cmd_simulate(args) -> int:
    from vigil.produce import clock_notes, produce_fleet
    from vigil.simulate import DEFAULT_START, Fleet, describe_faults, plan, write_csvs
    from vigil.specs import parse_speed, parse_start

    if (args.out is None) == (args.bootstrap_servers is None):
        raise UserError("give --out DIR (CSV files) or --bootstrap-servers HOST:PORT (live readings to Kafka)")
    if args.out is not None and args.duration is None:
        raise UserError("--out needs --duration (e.g. 7d)")
    if args.out is not None and (args.rate, args.speed) != (None, None):
        raise UserError("--rate and --speed pace Kafka output; CSV files are written as fast as possible")
    if args.rate is not None and not args.rate > 0:
        raise UserError(f"--rate {args.rate}: readings per second per asset must be more than 0")
    start = parse_start(args.start) if args.start else DEFAULT_START if args.out else parse_start("now")
    config, rows = plan(args.assets, start=start, interval=args.interval, period=args.period, seed=args.seed,
                        faults=args.fault, duration=args.duration, stops=args.stop, outages=args.outage,
                        clock_steps=args.clock_step, slow_sensors=args.slow_sensor, jitter=args.jitter,
                        kind=args.kind)
    for line in describe_faults(config):
        _log(args, f"simulate: {line}")
    if args.out is not None:
        written = write_csvs(config, rows, args.out, progress=lambda m: _log(args, m))
        print(f"simulate: {written.describe()} -> {args.out} (ground truth in faults.json)")
        return 0
    speed = args.rate * config.interval if args.rate is not None else parse_speed(args.speed or "1")
    span = None if rows is None else rows * config.interval
    notes = clock_notes(start.timestamp(), span, speed, time.time())
    return _produce(args, notes, lambda sink, stop: produce_fleet(Fleet(config), rows, sink, speed, stop))


def cmd_replay(args) -> int:
    from detector.datafiles import read_file
    from vigil.produce import clock_notes, replay
    from vigil.specs import parse_speed

    table = read_file(args.file, time_column=args.time_column, label_column=args.label_column,
                     drop_columns=tuple(c for c in args.drop_columns.split(",") if c), strict_time=args.strict_time)
    _warn_skipped(args, [table])
    speed = parse_speed(args.speed)
    asset = args.asset or Path(args.file).stem
    shift = round(time.time() - table.time[0]) if args.rebase else 0.0  # read_file: at least one row
    notes = clock_notes(table.time[0] + shift, table.time[-1] - table.time[0], speed, time.time())
    return _produce(args, notes, lambda sink, stop: replay(table, asset, sink, speed, stop, shift))


def _produce(args, notes: list[str], run) -> int:
    """Run run(sink, stop) against Kafka; Ctrl-C or SIGTERM stops it cleanly (exit 0)."""
    from kafka.errors import KafkaError

    from detector.kafka_client import KafkaAccessError
    from vigil.produce import KafkaSink, stop_on_signals

    for note in notes:
        _log(args, f"{args.command}: note: {note}")
    try:
        with KafkaSink(args.bootstrap_servers, args.topic) as sink, stop_on_signals() as stop:
            _log(args, f"{args.command}: producing to {args.topic} at {args.bootstrap_servers} (Ctrl-C stops)")
            produced = run(sink, stop)
    except KafkaAccessError as e:  # refused credentials or certificate: one line, no retries
        raise UserError(str(e)) from None
    except KafkaError as e:
        raise UserError(f"Kafka at {args.bootstrap_servers}: {e} "
                        "(is the broker running? deploy/kafka/broker start runs a local one)") from None
    print(f"{args.command}: {produced.describe()} -> {args.topic}")
    return 0


def cmd_retrain(args) -> int:
    import dataclasses

    from detector.registry import load_current
    from training.config import load_config
    from training.retrain import config_of, load_gate, retrain

    gate = load_gate(args.config, holdout_fraction=args.holdout_fraction,
                     max_false_alarm_rate=args.max_false_alarm_rate,
                     false_alarm_tolerance=args.false_alarm_tolerance, recall_tolerance=args.recall_tolerance)
    if args.shadow_hours is not None:
        if not args.shadow_hours > 0:
            raise UserError(f"--shadow-hours {args.shadow_hours}: must be more than 0")
        if not args.bootstrap_servers:
            raise UserError("--shadow-hours compares the shadow with the current model on the alert topics: "
                            "give --bootstrap-servers")
        from detector import registry as reg

        if reg.shadow_version(args.registry) is not None:  # settle the pending shadow; no new challenger
            return _settle_shadow(args)
    current = load_current(args.registry)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    config = load_config(args.config, **overrides) if args.config else \
        dataclasses.replace(config_of(current), **overrides)
    if (args.data is None) == (args.bootstrap_servers is None):
        raise UserError("give exactly one source: --data FILES or --bootstrap-servers (with --topic and --since)")
    if args.data is not None:
        from training.recent import from_files

        tables, source = from_files(args.data, current.sensors, 2 * current.config.window, args.strict_time,
                                    warn=lambda t: _warn_skipped(args, [t]), interval_seconds=current.interval_seconds
                                    ), {"data": args.data}
        labelled, false_alarms = [], []
    else:
        recent = _recent_kafka(args, current)
        tables, source, labelled, false_alarms = recent.tables, recent.summary, recent.labelled, recent.false_alarms
    if args.labels:
        from detector.datafiles import read_path

        files = _admit_late(read_path(args.labels, strict_time=args.strict_time), current.interval_seconds)
        _warn_skipped(args, files)
        unlabelled = [t.path for t in files if t.labels is None]
        if unlabelled:
            raise UserError(f"{unlabelled[0]}: no label column ('anomaly'); --labels needs labelled files")
        labelled += files
    version, promoted, report = retrain(args.registry, tables, config, gate, labelled, source,
                                        say=lambda m: _log(args, m), shadow=args.shadow_hours is not None,
                                        false_alarms_labelled=false_alarms)
    for name in ("current", "challenger"):
        r = report[name]
        line = (f"{name:<11}{r['version']:<28}false alarms {r['normal']['false_alarm_rate']:.4%} of "
                f"{r['normal']['rows']} held-out rows ({r['normal']['episodes']} episodes)")
        if "labelled" in r:
            line += f", labelled events detected {r['labelled']['events_detected']}/{r['labelled']['events']}"
        if "operator_false_alarms" in r:
            line += (f", flags {r['operator_false_alarms']['flagged_rows']} of {r['operator_false_alarms']['rows']} "
                     "rows labelled false_alarm")
        print(line)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    if promoted:
        print(f"promoted {version}: now current in {args.registry}")
        return 0
    if report["decision"] == "shadowing":
        print(f"challenger {version} passed the gate: now the shadow in {args.registry}; a later "
              f"`vigil retrain --shadow-hours {args.shadow_hours:g}` promotes it once it has scored the live stream "
              f"for {args.shadow_hours:g} h with no more alert episodes than {report['current']['version']}")
        return 4
    print(f"kept {report['current']['version']}; challenger {version} registered but not promoted:")
    for reason in report["reasons"]:
        print(f"  {reason}")
    return 3


def _settle_shadow(args) -> int:
    """vigil retrain --shadow-hours with a pending shadow: promote it (0), wait (4) or drop it (3)."""
    from detector import registry as reg
    from training.shadow_gate import decide, describe

    version, seconds = _shadow_period(args.registry)
    hours = seconds / 3600
    if hours < args.shadow_hours:
        print(f"shadow {version} has scored the live stream for {hours:.1f} h of {args.shadow_hours:g}: "
              "waiting (no new challenger while it runs)")
        return 4
    comparison = _shadow_comparison(args, version, seconds)
    for line in describe(comparison, version, hours):
        print(line)
    if args.report:
        Path(args.report).write_text(json.dumps({"shadow_version": version, "hours": hours, **comparison}, indent=2) + "\n")
    reasons = decide(comparison, hours, args.shadow_hours)
    if not reasons:
        reg.promote(args.registry, version)
        print(f"promoted {version}: now current in {args.registry}")
        return 0
    reg.set_shadow(args.registry, None)
    print(f"kept {reg.current_version(args.registry)}; shadow {version} dropped:")
    for reason in reasons:
        print(f"  {reason}")
    return 3


def cmd_label(args) -> int:
    from detector.alerts import iso_ms
    from detector.labels import Label
    from detector.topics import SourceError, read_records
    from vigil.durations import parse_duration
    from vigil.produce import KafkaSink

    try:
        lookback = parse_duration(args.lookback)
    except ValueError as e:
        raise UserError(str(e)) from None
    now_ms = int(time.time() * 1000)
    asset = model = opened = ""
    options = _kafka_options(args.bootstrap_servers, "vigil-label")  # the pre-flight check, once
    try:  # the alert's asset and route, from its events
        for record in read_records(options, args.alerts_topic,
                                   now_ms - int(lookback * 1000), now_ms + 1):
            try:
                event = json.loads(record.value)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("alert_id") == args.alert_id:
                asset, model, opened = event.get("asset", ""), event.get("model", ""), event.get("opened_at", "")
    except SourceError as e:
        print(f"vigil label: warning: {e}", file=sys.stderr)
    if not asset:
        print(f"vigil label: warning: alert {args.alert_id} not found on {args.alerts_topic} in the last "
              f"{args.lookback}; labelled anyway", file=sys.stderr)
    label = Label(args.alert_id, args.label, args.by or os.environ.get("USER", ""), args.note or "", asset, model,
                  iso_ms(now_ms))
    sink = KafkaSink(args.bootstrap_servers, args.topic, checked=True)
    sink.send(args.alert_id.encode(), label.to_json())
    sink.close()
    where = f" ({asset}{', route ' + model if model else ''}, opened {opened})" if asset else ""
    print(f"labelled alert {args.alert_id}{where} {args.label} on {args.topic}")
    return 0


def _recent_kafka(args, current):
    from training.recent import from_kafka
    from vigil.durations import parse_duration

    if not args.topic or not args.since:
        raise UserError("reading from Kafka needs --topic and --since (e.g. --since 7d)")
    try:
        since, margin = parse_duration(args.since), parse_duration(args.exclude_margin)
    except ValueError as e:
        raise UserError(str(e)) from None
    alerts_topic = None if args.no_alerts else _beside_readings(args, "alerts")
    labels_topic = None if args.no_alerts else _beside_readings(args, "labels")
    options = _kafka_options(args.bootstrap_servers, "vigil-retrain")
    assets = _asset_patterns(args)
    return from_kafka(options, args.topic, alerts_topic, since, margin, current.sensors, 2 * current.config.window,
                      say=lambda m: _log(args, m), assets=assets, labels_topic=labels_topic)


def cmd_serve(args) -> int:
    import logging

    from detector.settings import FIELDS, load_settings

    settings = load_settings({name: getattr(args, name, None) for name in FIELDS}, config=args.config)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level.lower() != "debug":  # while a broker is away the client logs every retry; we log once
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    from kafka.errors import KafkaError

    from detector.kafka_client import KafkaAccessError
    from detector.service import Service

    service = Service(settings)
    service.install_signal_handlers()
    try:
        service.connect()
    except KafkaAccessError as e:  # found before anything started: nothing to close
        raise UserError(str(e)) from None
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
    from detector.settings import FIELDS, ServeSettings, setting_type

    defaults = ServeSettings()
    p.add_argument("--config", help="TOML file with a [serve] table (also VIGIL_CONFIG)")
    for name, f in FIELDS.items():
        default = getattr(defaults, name)
        kind, optional = setting_type(name)
        if name == "model":
            help_text = "model directory or model registry"
        elif default is None:
            help_text = f"(default, or 'model': {f.metadata.get('unset', 'unset')})"
        else:
            help_text = f"(default: {default!r})"
        p.add_argument(f"--{name.replace('_', '-')}", type=str if kind is bool or optional else kind, default=None,
                       metavar=kind.__name__.upper(), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    from detector.labels import LABELS  # the values vigil serve counts and vigil retrain reads

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
    p.add_argument("--interval", help="the sampling interval, e.g. 1s or 5m (default: the median spacing of the "
                                      "data's timestamps)")
    p.add_argument("--off-condition", metavar="CONDITION",
                   help='when the machine is switched off, e.g. "motor_current < 0.5": such rows are left out of '
                        "training, and in service not scored (an open alert resolves when switched off)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_train)

    p = command("inspect", "Check sensor data before training: per sensor missing readings, constant and flat-lined "
                           "stretches, categorical channels, outliers, counters, values the validation part holds and "
                           "the training part never saw; per file the sampling interval, "
                           "jitter, gaps, duplicate and backward times, and whether there are enough windows.")
    _add_data_options(p)
    p.add_argument("--config", help="the training TOML: its window and validation settings decide 'enough windows' "
                                    "and where the validation part starts")
    p.add_argument("--window", type=int, help="time steps per window (default: the config's, else 60)")
    p.add_argument("--json", help="also write the report (findings and per-sensor statistics) to this JSON file")
    p.add_argument("--html", help="also write a page with the findings and a small plot per sensor (*.html)")
    p.set_defaults(func=cmd_inspect)

    p = command("score", "Score every row of a CSV or Parquet file (or directory) with a model; write scores.csv.")
    _add_data_options(p)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--out", required=True, help="output file: timestamp,score,threshold,is_anomaly,top_sensors,... as CSV, or Parquet when it "
                                                     "ends in .parquet")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_score)

    p = command("evaluate", "Score labelled data and report detection metrics.")
    _add_data_options(p)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.set_defaults(func=cmd_evaluate)

    p = command("report", "Draw what a model makes of one data file: sensors, score against the threshold, flagged "
                          "stretches, labelled events, and a table of alerts with their top sensors.")
    _add_data_options(p)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--out", required=True, help="report.html (self-contained page with the alert table) or "
                                                "report.png (the picture only)")
    p.add_argument("--from", dest="start", metavar="TIME", help="first time shown: ISO 8601 (naive = UTC) "
                                                                "or epoch seconds (default: the file's start)")
    p.add_argument("--to", dest="end", metavar="TIME", help="last time shown (default: the file's end)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_report)

    p = command("demo", "The whole loop live: simulate a week of pump history, train and register a model, serve it, "
                        "stream live readings with a fault and print the alerts.")
    p.add_argument("--workdir", default="vigil-demo", help="where to write data, models and logs")
    p.add_argument("--bootstrap-servers", default="127.0.0.1:9092", help="Kafka (default 127.0.0.1:9092)")
    p.add_argument("--assets", type=int, default=3, help="pumps to simulate (default 3)")
    p.add_argument("--history", default="7d", help="normal history to train on (default 7d)")
    p.add_argument("--fault", help="fault to inject live (default pump-2:cavitation@1m+5m; see vigil simulate --help)")
    p.add_argument("--metrics-addr", default="127.0.0.1:9108", help="vigil serve's metrics address")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: at Ctrl-C)")
    p.add_argument("--offline", action="store_true", help="the small demo without Kafka: train, score, list anomalies")
    p.add_argument("--quiet", action="store_true", help="(--offline) no progress output")
    p.set_defaults(func=cmd_demo)

    p = command("models", "List, inspect, promote, shadow and roll back model versions in a registry.")
    p.add_argument("action", choices=["list", "show", "promote", "rollback", "shadow", "compare"])
    p.add_argument("version", nargs="?", help="the version (show, promote, shadow)")
    p.add_argument("--registry", required=True, help="registry directory")
    p.add_argument("--clear", action="store_true", help="shadow: end shadowing")
    p.add_argument("--bootstrap-servers", help="compare: the Kafka brokers whose alert topics to read")
    p.add_argument("--alerts-topic", help="compare: the current model's alerts (default vigil.alerts)")
    p.add_argument("--shadow-alerts-topic", help="compare: the shadow's (default ALERTS_TOPIC.shadow)")
    p.add_argument("--assets", metavar="GLOBS", help="compare: only these assets (a route's, e.g. 'pump-*')")
    p.add_argument("--json", metavar="FILE", help="compare: also write the comparison as JSON")
    p.set_defaults(func=cmd_models)

    p = command("retrain", "Train a challenger on recent normal data; promote it only if it beats the current "
                           "model on held-out recent data.")
    p.add_argument("--registry", required=True, help="model registry (its current model is the one to beat)")
    p.add_argument("--data", help="recent data: CSV or Parquet file or directory (rows labelled anomalous are left out)")
    p.add_argument("--bootstrap-servers", help="instead of --data: read recent readings from Kafka")
    p.add_argument("--topic", help="readings topic (with --bootstrap-servers)")
    p.add_argument("--since", help="how far back to read, e.g. 7d, 36h (with --bootstrap-servers)")
    p.add_argument("--alerts-topic", help="alerts whose stretches are left out (default: TOPIC's prefix + .alerts, "
                                          "e.g. vigil.alerts for vigil.readings)")
    p.add_argument("--exclude-margin", default="1h", help="left out before an alert opened and after it resolved "
                                                          "(default 1h)")
    p.add_argument("--no-alerts", action="store_true", help="do not read the alerts topic (nothing left out)")
    p.add_argument("--labels-topic", help="operators' labels (vigil label; default: TOPIC's prefix + .labels): an alert "
                                          "labelled false_alarm is trained on as normal, the challenger must flag "
                                          "fewer of those rows and still detect the alerts labelled confirmed")
    p.add_argument("--assets", metavar="GLOBS", help="with --bootstrap-servers: only these assets, comma-separated "
                                                     "ids or globs (a route's, e.g. 'pump-*', on a topic of several "
                                                     "machine types)")
    p.add_argument("--labels", help="labelled CSV or Parquet file or directory: the challenger must detect its events too")
    _add_strict_time(p)
    p.add_argument("--config", help="TOML: training settings (default: the current model's) and a [gate] table")
    p.add_argument("--holdout-fraction", type=float, help="last part of each recent series held out (default 0.2)")
    p.add_argument("--max-false-alarm-rate", type=float, help="gate: challenger's flagged fraction of held-out rows "
                                                               "at most this (default 0.01)")
    p.add_argument("--false-alarm-tolerance", type=float, help="gate: and at most this much above the current "
                                                                "model's (default 0.002)")
    p.add_argument("--recall-tolerance", type=float, help="gate with --labels: event recall at most this much below "
                                                           "the current model's (default 0)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: the current model's setting)")
    p.add_argument("--seed", type=int)
    p.add_argument("--report", help="also write the comparison report (JSON) here")
    p.add_argument("--shadow-hours", type=float, metavar="N",
                   help="a challenger that passes the gate becomes the shadow instead of current; a later run "
                        "promotes the shadow once it has scored the live stream N hours with no more alert episodes "
                        "than the current model (else drops it). Exit 4: shadowing")
    p.add_argument("--shadow-alerts-topic", help="with --shadow-hours: the shadow's alerts (default ALERTS_TOPIC.shadow, "
                                                 "ALERTS_TOPIC as --alerts-topic says)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_retrain)

    p = command("label", "Give an operator's verdict on an alert (confirmed, false_alarm or maintenance); "
                         "vigil retrain uses it.")
    p.add_argument("alert_id", help="the alert_id of the alert's events")
    p.add_argument("label", choices=LABELS)
    p.add_argument("--note", help="free text (at most 2,000 characters)")
    p.add_argument("--by", help="who labels it (default: $USER)")
    p.add_argument("--bootstrap-servers", required=True, help="Kafka brokers")
    p.add_argument("--topic", default="vigil.labels", help="labels topic (default vigil.labels)")
    p.add_argument("--alerts-topic", default="vigil.alerts", help="where the alert's events are (default vigil.alerts)")
    p.add_argument("--lookback", default="30d", help="how far back to look for the alert (default 30d)")
    p.set_defaults(func=cmd_label)

    p = command("simulate", "Simulate a plant of pumps (or fans) with injected faults: labelled CSV files, or live "
                            "readings to Kafka.")
    p.add_argument("--assets", type=int, default=5, help="number of machines, named KIND-1..KIND-N (default 5)")
    p.add_argument("--kind", default="pump", choices=("pump", "fan"),
                   help="the machines: pump (vibration_x, vibration_y, motor_current, voltage, pressure, temperature, "
                        "flow) or fan (vibration, motor_current, speed, bearing_temperature, airflow); a mixed plant "
                        "is one simulate per kind on the same topic (default pump)")
    p.add_argument("--duration", help="simulated time, e.g. 7d (needed with --out; Kafka: until Ctrl-C by default)")
    p.add_argument("--interval", default="1s", help="time between readings (default 1s)")
    p.add_argument("--start", help="first reading time, ISO 8601 (naive = UTC) or 'now' "
                                   "(default: 2026-01-01T00:00:00Z with --out, so files are reproducible; now for Kafka)")
    p.add_argument("--period", default="1d", help="period of the plant's load cycle (default 1d)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same readings (default 0)")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="inject a fault, ASSET:KIND[/SENSOR]@START+DURATION (repeatable; see below)")
    p.add_argument("--stop", action="append", default=[], metavar="SPEC",
                   help="switch pumps off, ASSETS@HH:MM+DURATION every day (UTC) or ASSETS@START+DURATION once "
                        "(repeatable; labelled normal)")
    p.add_argument("--outage", action="append", default=[], metavar="SPEC",
                   help="a gateway outage, ASSETS@START+DURATION: no readings at all (repeatable)")
    p.add_argument("--jitter", metavar="SECONDS",
                   help="move each reading's time by up to +-SECONDS (below half the interval: order is kept)")
    p.add_argument("--clock-step", action="append", default=[], metavar="SPEC",
                   help="the clock steps back, ASSETS@START-STEP: later readings carry times STEP earlier "
                        "(repeatable)")
    p.add_argument("--slow-sensor", action="append", default=[], metavar="SENSOR/FACTOR",
                   help="the sensor reports only every FACTOR-th reading, missing between (repeatable)")
    p.add_argument("--out", metavar="DIR", help="write DIR/KIND-N.csv (timestamp, sensors, anomaly) and DIR/faults.json")
    p.add_argument("--bootstrap-servers", help="instead of --out: produce live readings to these Kafka brokers")
    p.add_argument("--topic", default="vigil.readings", help="Kafka topic (default vigil.readings)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="readings per second per asset (the same as --speed RATE x interval)")
    pace.add_argument("--speed", help="time scale: 1 = real time (default), 10 or 10x, max = as fast as possible")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_simulate)

    p = command("replay", "Replay a sensor CSV or Parquet file into Kafka as one asset's readings, at a time scale.")
    p.add_argument("file", help="a CSV or Parquet file (the formats train and score read)")
    p.add_argument("--asset", help="asset id: the message key and 'asset' (default: the file name without .csv)")
    p.add_argument("--bootstrap-servers", default="127.0.0.1:9092", help="Kafka brokers (default 127.0.0.1:9092)")
    p.add_argument("--topic", default="vigil.readings", help="Kafka topic (default vigil.readings)")
    p.add_argument("--speed", default="1", help="time scale: 1 = real time (default), 10 or 10x, max = as fast as possible")
    p.add_argument("--rebase", action="store_true", help="move the times so that the first row is now")
    p.add_argument("--time-column", help="name of the time column (default: the first column)")
    p.add_argument("--label-column", help="label column, not sent (default: 'anomaly' when present)")
    p.add_argument("--drop-columns", default="", help="comma-separated columns not to send")
    _add_strict_time(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_replay)

    p = command("serve", "Score sensor readings from Kafka per asset; produce alerts; export Prometheus metrics.")
    _add_serve_options(p)
    p.set_defaults(func=cmd_serve)
    return parser


def _compilation_cache() -> None:
    """JAX's persistent compilation cache, so a command does not compile again what an earlier
    one compiled for the same model shape (vigil score on a small file: 0.7 -> 0.3 s of
    compiling). In $VIGIL_JAX_CACHE (default ~/.cache/vigil/jax; "off" disables); only
    compilations over 0.1 s are kept (the scorer and the training step of a model shape,
    some hundred kB each, shared by every version of a model shape). Set through JAX's environment variables, so that commands which
    do not need JAX do not import it."""
    where = os.environ.get("VIGIL_JAX_CACHE") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                                     / "vigil" / "jax")
    if where.lower() in ("off", "none", "0"):
        return
    try:
        Path(where).mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # a read-only home: compile every time, as without the cache
    # a cache entry that cannot be written or read (a full disk, a file-size limit) only means
    # compiling again: not something to tell the user, whose error (if any) comes on its own
    import warnings

    warnings.filterwarnings("ignore", message="Error (writing|reading) persistent compilation cache entry")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", where)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    if "jax" in sys.modules:  # (in-process callers, e.g. the tests, may have imported it already)
        import jax

        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def _user_error(e: BaseException) -> bool:
    """An error the user can act on (printed as one line, exit 2), not a bug."""
    from detector.artifact import ArtifactError
    from detector.settings import SettingsError
    from detector.table import DataError
    from training.config import ConfigError
    from training.recent import SourceError
    from vigil.specs import SimulationError

    return isinstance(e, (UserError, DataError, ArtifactError, ConfigError, SettingsError, SourceError,
                          SimulationError))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _compilation_cache()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"vigil {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the output's reader went away (vigil evaluate ... | head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception as e:
        if not _user_error(e):
            raise
        print(f"vigil {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
