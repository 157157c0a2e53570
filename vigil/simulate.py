"""`vigil simulate`: a plant of pumps with injected faults, as CSV files or (vigil.produce) live.

Every pump follows the synthetic.py sensor model with its own seed-derived parameters. Its
load is the plant's daily cycle (lowest at midnight UTC, highest at noon) plus a slow
plant-wide random walk plus its own faster one (mean-reverting AR(1) walks, so they stay
bounded); temperature follows the load through a first-order thermal lag.

Readings are made chunk by chunk with all state carried between chunks, and every random
stream is drawn row-major from its own generator, so a seed gives the same readings for
any chunk sizes: a week written as CSV equals the same week produced live. Each pump's
generators come from its index in the plant, so pump-1 is the same in a plant of 3 or 30.

Situations of normal operation (stops, outages, jitter, clock steps, slow sensors) are
vigil.situations'; without them the readings are exactly what they were before they existed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from vigil import csvformat, situations, synthetic
from vigil.specs import (ClockStep, Fault, Outage, SimulationError, SlowSensor, Stop, parse_clock_step, parse_fault,
                         parse_jitter, parse_outage, parse_slow_sensor, parse_stop, positive_duration)

DEFAULT_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
LOAD_MEAN, DAILY_SWING = 0.6, 0.25
PLANT_WALK = (0.04, 7200.0)  # (standard deviation, time constant in seconds)
PUMP_WALK = (0.04, 600.0)
THERMAL_SECONDS = 300.0      # temperature's time constant
CHUNK_ROWS = 1 << 16         # rows per asset generated and written at a time
_DRAWS = len(synthetic.SENSORS) + synthetic.NOISE_COLUMNS + 1  # per row: sensor noise, fault noise, walk step


@dataclass(frozen=True)
class FleetConfig:
    """A plant: asset names, first reading time, sample interval and daily period (seconds), seed,
    faults, and situations of normal operation (vigil.situations; jitter in seconds)."""

    assets: tuple[str, ...]
    start: datetime = DEFAULT_START
    interval: float = 1.0
    period: float = 86400.0
    seed: int = 0
    faults: tuple[Fault, ...] = ()
    stops: tuple[Stop, ...] = ()
    outages: tuple[Outage, ...] = ()
    clock_steps: tuple[ClockStep, ...] = ()
    slow_sensors: tuple[SlowSensor, ...] = ()
    jitter: float = 0.0
    kind: str = "pump"  # synthetic.MACHINES: the sensors the assets report

    @property
    def machine(self) -> synthetic.Machine:
        return synthetic.MACHINES[self.kind]

    @property
    def millis(self) -> bool:
        """Whether timestamps need milliseconds (a sub-second interval, start or clock step, or jitter)."""
        return (self.interval % 1 != 0 or self.start.microsecond != 0 or self.jitter > 0
                or any(c.step % 1 != 0 for c in self.clock_steps))

    def fault_rows(self, fault: Fault) -> tuple[int, int]:
        """The rows [first, end) whose time offset lies in [start, start + duration); at least one."""
        first = math.ceil(fault.start / self.interval - 1e-9)
        end = math.ceil((fault.start + fault.duration) / self.interval - 1e-9)
        return first, max(end, first + 1)


def plan(assets: int, *, start: datetime = DEFAULT_START, interval: str = "1s", period: str = "1d", seed: int = 0,
         faults: Sequence[str] = (), duration: str | None = None, stops: Sequence[str] = (),
         outages: Sequence[str] = (), clock_steps: Sequence[str] = (), slow_sensors: Sequence[str] = (),
         jitter: str | None = None, kind: str = "pump") -> tuple[FleetConfig, int | None]:
    """A checked FleetConfig for KIND-1..KIND-N (pump-1.., fan-1..) and its number of rows (None:
    no end) from command-line text; raises SimulationError naming the option and what is wrong."""
    if assets < 1:
        raise SimulationError(f"--assets {assets}: need at least 1")
    if kind not in synthetic.MACHINES:
        raise SimulationError(f"--kind {kind!r}: choose from {', '.join(synthetic.MACHINES)}")
    machine = synthetic.MACHINES[kind]
    config = FleetConfig(tuple(f"{kind}-{i}" for i in range(1, assets + 1)), start,
                         positive_duration(interval, "--interval"), positive_duration(period, "--period"), seed,
                         tuple(parse_fault(f, machine) for f in faults), tuple(parse_stop(s) for s in stops),
                         tuple(parse_outage(o) for o in outages), tuple(parse_clock_step(c) for c in clock_steps),
                         tuple(parse_slow_sensor(s, machine) for s in slow_sensors),
                         0.0 if jitter is None else parse_jitter(jitter), kind)
    rows = None
    if duration is not None:
        rows = max(1, round(positive_duration(duration, "--duration") / config.interval))
    ends = f"starts after the simulation ends (--duration {duration})"
    for f in config.faults:
        if f.asset not in config.assets:
            raise SimulationError(f"--fault {f.spec!r}: no asset {f.asset!r} "
                                  f"(simulating {config.assets[0]}..{config.assets[-1]})")
        if rows is not None and config.fault_rows(f)[0] >= rows:
            raise SimulationError(f"--fault {f.spec!r}: {ends}")
    situations.check(config, rows, ends)
    return config, rows


@dataclass(frozen=True)
class Chunk:
    """Consecutive readings of every asset: seconds [rows] epoch seconds when they were due;
    values [assets, rows, sensors] (NaN = missing); labels [assets, rows] 0/1;
    times [assets, rows] the epoch seconds the readings carry (jitter, clock steps; None: `seconds`);
    present [assets, rows] False where an outage leaves a reading out (None: all present)."""

    seconds: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    times: np.ndarray | None = None
    present: np.ndarray | None = None

    @property
    def uniform(self) -> bool:
        """Whether every asset reports every row at `seconds`."""
        return self.times is None and self.present is None

    def asset(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What asset i reports: times [n], values [n, sensors], labels [n] (outages left out)."""
        times = self.seconds if self.times is None else self.times[i]
        if self.present is None:
            return times, self.values[i], self.labels[i]
        keep = self.present[i]
        return times[keep], self.values[i][keep], self.labels[i][keep]


def _ar1(x: np.ndarray, phi: float, scale: float, last: np.ndarray) -> np.ndarray:
    """y[t] = phi * y[t-1] + scale * x[t] along the last axis, continuing from y[-1] = last [...]."""
    return lfilter([scale], [1.0, -phi], x, zi=np.asarray(phi * last)[..., None])[0]


def _walk(std: float, tau: float, interval: float) -> tuple[float, float]:
    """(phi, scale) of an AR(1) walk with time constant tau whose spread stays at std."""
    phi = math.exp(-interval / tau)
    return phi, std * math.sqrt(1 - phi**2)


@dataclass
class _Active:
    """A scheduled fault: its asset's index, rows [first, end), columns, and the readings it holds."""

    fault: Fault
    asset: int
    first: int
    end: int
    cols: list[int]
    held: np.ndarray = field(default_factory=lambda: np.empty(0))


class Fleet:
    """Readings of every asset of a FleetConfig, chunk after chunk (call chunk() in order)."""

    def __init__(self, config: FleetConfig):
        self.config = config
        self.row = 0
        plant_seed, *pump_seeds = np.random.SeedSequence(config.seed).spawn(1 + len(config.assets))
        self._plant_rng = np.random.default_rng(plant_seed)
        self._params, self._rngs = [], []
        for s in pump_seeds:
            params_seed, noise_seed = s.spawn(2)
            self._params.append(synthetic.pump_params(np.random.default_rng(params_seed)))
            self._rngs.append(np.random.default_rng(noise_seed))
        # a third stream per pump, spawned after the others so that they stay as they were
        self._jitter_rngs = [np.random.default_rng(s.spawn(1)[0]) for s in pump_seeds] if config.jitter else []
        self._plant_walk, self._pump_walk = (_walk(*w, config.interval) for w in (PLANT_WALK, PUMP_WALK))
        self._thermal = 1 - math.exp(-config.interval / THERMAL_SECONDS)  # share of the gap closed per row
        self._plant = PLANT_WALK[0] * self._plant_rng.standard_normal()
        self._walk = PUMP_WALK[0] * np.array([rng.standard_normal() for rng in self._rngs])
        self._slow: np.ndarray | None = None  # thermal state, set from the first load
        index = {name: i for i, name in enumerate(config.assets)}
        self._faults = [_Active(f, index[f.asset], *config.fault_rows(f),
                                synthetic.fault_columns(f.kind, f.sensor, config.machine)) for f in config.faults]

    def chunk(self, rows: int) -> Chunk:
        """The next `rows` readings of every asset."""
        c = self.config
        first = self.row
        seconds = c.start.timestamp() + (first + np.arange(rows)) * c.interval
        cycle = LOAD_MEAN - DAILY_SWING * np.cos(2 * np.pi * (seconds % c.period) / c.period)
        plant = _ar1(self._plant_rng.standard_normal(rows), *self._plant_walk, self._plant)
        self._plant = plant[-1]
        z = np.stack([rng.standard_normal((rows, _DRAWS)) for rng in self._rngs])  # [assets, rows, draws]
        walk = _ar1(z[:, :, -1], *self._pump_walk, self._walk)
        self._walk = walk[:, -1]
        load = cycle + plant + walk  # [assets, rows]
        run = situations.running(c, first, rows)  # [assets, rows] 1 running .. 0 stopped, or None
        heat = load if run is None else run * load + (1 - run) * synthetic.OFF_DRIVE
        if self._slow is None:
            self._slow = heat[:, 0]
        slow = _ar1(heat, 1 - self._thermal, self._thermal, self._slow)
        self._slow = slow[:, -1]
        sensors = len(synthetic.SENSORS)
        values = np.stack([synthetic.readings(load[i], slow[i], p, z[i, :, :sensors])
                           for i, p in enumerate(self._params)])
        if run is not None:
            for i in range(len(c.assets)):
                if run[i].min() < 1:
                    synthetic.stopped(values[i], run[i], z[i, :, :sensors])
        labels = np.zeros((len(c.assets), rows), np.int8)
        for f in self._faults:
            lo, hi = max(f.first, first), min(f.end, first + rows)
            if lo >= hi:
                continue
            span = values[f.asset, lo - first:hi - first]
            if lo == f.first:
                f.held = span[0, f.cols].copy()
            progress = (np.arange(lo, hi) - f.first) / max(f.end - f.first - 1, 1)
            fading = None if run is None else run[f.asset, lo - first:hi - first, None]
            before = span.copy() if f.fault.kind in synthetic.MACHINE_FAULTS and fading is not None \
                and fading.min() < 1 else None
            synthetic.inject(f.fault.kind, span, progress, z[f.asset, lo - first:hi - first, sensors:-1],
                             f.cols, f.held)
            if before is not None:  # a machine fault fades with the pump
                span[:] = before + fading * (span - before)
            labels[f.asset, lo - first:hi - first] = 1
        situations.thin_slow_sensors(c, first, values)
        times = situations.clock_offsets(c, first, rows)
        if self._jitter_rngs:
            jitter = c.jitter * (2 * np.stack([rng.random(rows) for rng in self._jitter_rngs]) - 1)
            times = jitter if times is None else times + jitter
        self.row += rows
        return Chunk(seconds, c.machine.readings(values), labels, None if times is None else seconds + times,
                     situations.present(c, first, rows))


def iso(dt: datetime) -> str:
    """A UTC time as ISO 8601 with a Z, with milliseconds only when it has a fraction."""
    return dt.isoformat(timespec="milliseconds" if dt.microsecond else "seconds").replace("+00:00", "Z")


def ground_truth(config: FleetConfig, rows: int | None) -> dict:
    """The injected faults with their times and rows ([first_row, end_row): end exclusive), and
    the situations given (situations.ground_truth). `rows`: readings simulated per asset; rows
    are positions among a CSV's data rows, which outages leave out."""
    faults = []
    for f in config.faults:
        first, end = config.fault_rows(f)
        end = end if rows is None else min(end, rows)
        gaps = [] if rows is None else situations.outage_rows(config, config.assets.index(f.asset), rows)
        faults.append({"spec": f.spec, "asset": f.asset, "kind": f.kind,
                       "sensors": config.machine.names(synthetic.fault_columns(f.kind, f.sensor, config.machine)),
                       "start": iso(config.start + timedelta(seconds=first * config.interval)),
                       "end": iso(config.start + timedelta(seconds=end * config.interval)),
                       "first_row": situations.file_row(gaps, first), "end_row": situations.file_row(gaps, end)})
    truth = {"start": iso(config.start), "interval_seconds": config.interval, "rows": rows,
             "period_seconds": config.period, "seed": config.seed, "assets": list(config.assets), "faults": faults}
    return truth if rows is None else truth | situations.ground_truth(config, rows)


def describe_faults(config: FleetConfig) -> list[str]:
    """One line per fault (asset, kind, sensors and times), then one per situation."""
    return [f"fault {f['asset']} {f['kind']} ({', '.join(f['sensors'])}) from {f['start']} to {f['end']}"
            for f in ground_truth(config, None)["faults"]] + situations.describe(config)


@dataclass(frozen=True)
class Written:
    """The CSV files written, rows simulated for each, wall seconds, rows left out by outages (all files)."""

    files: list[Path]
    rows: int
    seconds: float
    missing: int = 0

    def describe(self) -> str:
        n = len(self.files)
        gaps = f" less {self.missing:,} in outages" if self.missing else ""
        return (f"wrote {n} file{'s' * (n != 1)} x {self.rows:,} rows{gaps} in {self.seconds:.1f}s "
                f"({(n * self.rows - self.missing) / max(self.seconds, 1e-9) / 1e6:.2f}M rows/s)")


def write_csvs(config: FleetConfig, rows: int, out: str | Path, progress: Callable[[str], None] | None = None,
               chunk_rows: int = CHUNK_ROWS) -> Written:
    """Write out/ASSET.csv for every asset (timestamp, sensors, anomaly) and out/faults.json.

    Refuses to overwrite files. progress gets a line at most every 2 seconds.
    """
    out = Path(out)
    paths = [out / f"{name}.csv" for name in config.assets] + [out / "faults.json"]
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise SimulationError(f"{existing[0]}: already exists; choose another --out directory")
    out.mkdir(parents=True, exist_ok=True)
    t0 = last_report = time.perf_counter()
    fleet = Fleet(config)
    with ExitStack() as stack:
        files = [stack.enter_context(open(p, "wb")) for p in paths[:-1]]
        for f in files:
            f.write(synthetic.header(labels=True, machine=config.machine))
        for done in range(0, rows, chunk_rows):
            chunk = fleet.chunk(min(chunk_rows, rows - done))
            shared = csvformat.timestamps(chunk.seconds, config.millis) if chunk.uniform else None
            for i, f in enumerate(files):
                seconds, values, labels = chunk.asset(i)
                if len(seconds):
                    stamps = shared if shared is not None else csvformat.timestamps(seconds, config.millis)
                    f.write(synthetic.csv_rows(stamps, values, labels, config.machine))
            now = time.perf_counter()
            if progress is not None and now - last_report >= 2.0:
                last_report = now
                written = done + len(chunk.seconds)
                progress(f"simulate: {written:,}/{rows:,} rows per asset ({written / rows:.0%}), "
                         f"{written * len(files) / (now - t0) / 1e6:.2f}M rows/s")
    truth = ground_truth(config, rows)
    paths[-1].write_text(json.dumps(truth, indent=2) + "\n")
    missing = sum(rows - n for n in truth.get("file_rows", {}).values())
    return Written(paths[:-1], rows, time.perf_counter() - t0, missing)

