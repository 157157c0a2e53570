"""Normal operation that detectors stumble on, for `vigil simulate`: pumps switched off on a
schedule, gateway outages, jittered and stepped clocks, sensors that report at a slower rate.

None of them is a fault: they never set the `anomaly` label. Each is a function of the row
index (row r is due r x interval after the simulation start), so any chunking gives the same
readings; only jitter is random, drawn from each pump's own generator (see simulate.Fleet).

- A stop switches a pump off: linear ramps of STOP_RAMP_SECONDS (at most a quarter of the
  stop) down from its start and up to its end, the readings of a stopped pump in between
  (synthetic.stopped). Machine faults fade with the pump; sensor faults stay.
- An outage leaves the asset's rows out: no CSV rows, no messages.
- A clock step makes every later reading of the asset carry a time `step` seconds earlier,
  so a file repeats that stretch of time (as a historian export does); live readings carry
  the same times, which vigil serve refuses as out of order until they pass its last one.
- Jitter moves each reading's time uniformly within +-jitter of its due time, never past a
  neighbour (plan() keeps it below half the interval, less a millisecond).
- A slow sensor is missing (an empty CSV cell, null in Kafka) except on every FACTOR-th row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

import numpy as np

from vigil.specs import SimulationError, Stop

if TYPE_CHECKING:
    from vigil.simulate import FleetConfig

STOP_RAMP_SECONDS = 30.0
DAY = 86400.0


def matching(pattern: str, assets: Sequence[str]) -> list[int]:
    """Indices of the assets an ASSETS pattern (a name or a shell-style pattern) matches."""
    return [i for i, name in enumerate(assets) if fnmatchcase(name, pattern)]


def check(config: FleetConfig, rows: int | None, ends: str) -> None:
    """Raise SimulationError, naming the option and the spec, for a situation that cannot be
    simulated as given; rows: readings per asset (None: no end); ends: what to say of a
    situation after the end."""
    c = config
    for option, given in (("--stop", c.stops), ("--outage", c.outages), ("--clock-step", c.clock_steps)):
        for g in given:
            if not matching(g.assets, c.assets):
                raise SimulationError(f"{option} {g.spec!r}: no asset matches {g.assets!r} "
                                      f"(simulating {c.assets[0]}..{c.assets[-1]})")
            daily = isinstance(g, Stop) and g.daily
            if not daily and rows is not None and rows_between(g.start, g.start, c.interval)[0] >= rows:
                raise SimulationError(f"{option} {g.spec!r}: {ends}")
    for i, name in enumerate(c.assets if rows is not None else ()):
        if outage_rows(c, i, rows) == [(0, rows)]:
            specs = [repr(o.spec) for o in c.outages if i in matching(o.assets, c.assets)]
            leave = "leaves" if len(specs) == 1 else "together leave"
            raise SimulationError(f"--outage {', '.join(specs)}: {leave} {name} without a single reading")
    most = max(c.interval - 0.001, 0.0) / 2
    if not 0 <= c.jitter <= most:
        raise SimulationError(f"--jitter {c.jitter:g}: must be less than half the --interval ({c.interval:g}s) "
                              f"less a millisecond, at most {most:g}s, so that readings stay in order")
    sensors = [s.sensor for s in c.slow_sensors]
    for s in c.slow_sensors:
        if sensors.count(s.sensor) > 1:
            raise SimulationError(f"--slow-sensor {s.spec!r}: {s.sensor} is given more than once")


def rows_between(start: float, end: float, interval: float) -> tuple[int, int]:
    """The rows [first, end) whose time offset lies in [start, end) seconds (possibly none)."""
    return math.ceil(start / interval - 1e-9), math.ceil(end / interval - 1e-9)


def stop_spans(stop: Stop, origin: float, t0: float, t1: float) -> list[tuple[float, float]]:
    """The stop's [start, end) in seconds after the simulation start that overlap [t0, t1);
    origin: the simulation start, epoch seconds (daily stops are at a UTC time of day)."""
    if not stop.daily:
        spans = [(stop.start, stop.start + stop.duration)]
    else:
        days = range(math.floor((origin + t0 - stop.duration - stop.start) / DAY),
                     math.floor((origin + t1 - stop.start) / DAY) + 1)
        spans = [(d * DAY + stop.start - origin, d * DAY + stop.start - origin + stop.duration) for d in days]
    return [(s, e) for s, e in spans if e > t0 and s < t1]


def running(config: FleetConfig, first: int, rows: int) -> np.ndarray | None:
    """[assets, rows] 1 where a pump runs, 0 where it is stopped, between on the ramps (None: no stops)."""
    if not config.stops:
        return None
    t = (first + np.arange(rows)) * config.interval
    off = np.zeros((len(config.assets), rows))
    origin = config.start.timestamp()
    for stop in config.stops:
        idx = matching(stop.assets, config.assets)
        for s, e in stop_spans(stop, origin, first * config.interval, (first + rows) * config.interval):
            ramp = min(STOP_RAMP_SECONDS, (e - s) / 4)
            off[idx] = np.maximum(off[idx], np.clip(np.minimum(t - s, e - t) / ramp, 0.0, 1.0))
    return 1.0 - off


def present(config: FleetConfig, first: int, rows: int) -> np.ndarray | None:
    """[assets, rows] False where an outage leaves the reading out (None: no outages)."""
    if not config.outages:
        return None
    keep = np.ones((len(config.assets), rows), bool)
    for o in config.outages:
        lo, hi = rows_between(o.start, o.start + o.duration, config.interval)
        lo, hi = max(lo, first), min(hi, first + rows)
        if lo < hi:
            keep[matching(o.assets, config.assets), lo - first:hi - first] = False
    return keep


def clock_offsets(config: FleetConfig, first: int, rows: int) -> np.ndarray | None:
    """[assets, rows] seconds the assets' clocks are off by (negative: behind), None: no clock steps."""
    if not config.clock_steps:
        return None
    offsets = np.zeros((len(config.assets), rows))
    for c in config.clock_steps:
        at = rows_between(c.start, c.start, config.interval)[0]
        offsets[matching(c.assets, config.assets), max(at - first, 0):] -= c.step
    return offsets


def thin_slow_sensors(config: FleetConfig, first: int, values: np.ndarray) -> None:
    """Make slow sensors missing (NaN), in place, except on every FACTOR-th row: values [assets, rows, 7]."""
    row = first + np.arange(values.shape[1])
    for s in config.slow_sensors:
        values[:, row % s.factor != 0, config.machine.column(s.sensor)] = np.nan


def outage_rows(config: FleetConfig, asset: int, rows: int) -> list[tuple[int, int]]:
    """The asset's rows [first, end) left out by outages, merged, in order, within `rows`."""
    spans = sorted(rows_between(o.start, o.start + o.duration, config.interval) for o in config.outages
                   if asset in matching(o.assets, config.assets))
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        lo, hi = max(lo, 0), min(hi, rows)
        if lo >= hi:
            continue
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def file_row(gaps: list[tuple[int, int]], row: int) -> int:
    """The position among an asset's CSV data rows of simulation row `row` (or of the row after
    it, when an outage left it out); gaps: outage_rows()."""
    return row - sum(max(0, min(hi, row) - lo) for lo, hi in gaps)


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds" if dt.microsecond else "seconds").replace("+00:00", "Z")


def ground_truth(config: FleetConfig, rows: int) -> dict:
    """What faults.json records about the situations given (keys only for those given).

    Rows are positions among the asset's CSV data rows (0-based, after the header), `end_row`
    exclusive; times are when the readings were due, before jitter and clock steps.
    """
    c, origin, out = config, config.start.timestamp(), {}
    at = lambda seconds: _iso(c.start + timedelta(seconds=seconds))  # noqa: E731
    gaps = [outage_rows(c, i, rows) for i in range(len(c.assets))]
    if c.stops:
        out["stops"] = []
        for stop in c.stops:
            for s, e in stop_spans(stop, origin, 0.0, rows * c.interval):
                lo, hi = rows_between(max(s, 0.0), min(e, rows * c.interval), c.interval)
                out["stops"].extend({"spec": stop.spec, "asset": c.assets[i], "start": at(max(s, 0.0)),
                                     "end": at(min(e, rows * c.interval)), "first_row": file_row(gaps[i], lo),
                                     "end_row": file_row(gaps[i], hi)}
                                    for i in matching(stop.assets, c.assets) if lo < hi)
        out["stops"].sort(key=lambda s: (c.assets.index(s["asset"]), s["first_row"]))
    if c.outages:
        out["outages"] = []
        for o in c.outages:
            lo, hi = rows_between(o.start, o.start + o.duration, c.interval)
            hi = min(hi, rows)
            out["outages"].extend({"spec": o.spec, "asset": c.assets[i], "start": at(lo * c.interval),
                                   "end": at(hi * c.interval), "readings": hi - lo, "file_row": file_row(gaps[i], lo)}
                                  for i in matching(o.assets, c.assets) if lo < hi)
        out["file_rows"] = {name: rows - sum(hi - lo for lo, hi in g) for name, g in zip(c.assets, gaps)}
    if c.clock_steps:
        out["clock_steps"] = []
        for step in c.clock_steps:
            row = rows_between(step.start, step.start, c.interval)[0]
            out["clock_steps"].extend({"spec": step.spec, "asset": c.assets[i], "at": at(row * c.interval),
                                       "back_seconds": step.step, "first_row": file_row(gaps[i], row)}
                                      for i in matching(step.assets, c.assets) if row < rows)
    if c.jitter:
        out["jitter_seconds"] = c.jitter
    if c.slow_sensors:
        out["slow_sensors"] = {s.sensor: s.factor for s in c.slow_sensors}
    return out


def describe(config: FleetConfig) -> list[str]:
    """One line per situation, for the command's log."""
    c, lines = config, []
    names = lambda pattern: ", ".join(c.assets[i] for i in matching(pattern, c.assets))  # noqa: E731
    span = lambda s: f"{s / 3600:g}h" if s >= 3600 else f"{s / 60:g}m" if s >= 60 else f"{s:g}s"  # noqa: E731
    for s in c.stops:
        when = (f"every day at {int(s.start // 3600):02d}:{int(s.start % 3600 // 60):02d}:{int(s.start % 60):02d} UTC"
                if s.daily else f"at {_iso(c.start + timedelta(seconds=s.start))}")
        lines.append(f"stop {names(s.assets)} {when} for {span(s.duration)} (ramps of "
                     f"{min(STOP_RAMP_SECONDS, s.duration / 4):g}s; labelled normal)")
    for o in c.outages:
        lines.append(f"outage {names(o.assets)} from {_iso(c.start + timedelta(seconds=o.start))} for "
                     f"{span(o.duration)}: no readings")
    for step in c.clock_steps:
        lines.append(f"clock of {names(step.assets)} steps back {span(step.step)} at "
                     f"{_iso(c.start + timedelta(seconds=step.start))}")
    if c.jitter:
        lines.append(f"jitter: reading times within +-{c.jitter:g}s of every {c.interval:g}s")
    for s in c.slow_sensors:
        lines.append(f"slow sensor {s.sensor}: one reading in {s.factor} (every {s.factor * c.interval:g}s)")
    return lines
