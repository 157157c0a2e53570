"""What a user writes on the simulator's command line: start times, speeds, faults, situations.

Fault spec: ASSET:KIND[/SENSOR]@START+DURATION, START counted from the simulation start,
for example `pump-3:bearing@2h+30m` or `pump-1:stuck/pressure@1.5d+45m`; durations are
vigil.durations' (90s, 30m, 2h, 1d, 1w, 1.5h; a bare number is seconds). Every parse error
names the option and the text it could not read.

Situations (normal operation, never labelled anomalous); ASSETS is an asset name or a
shell-style pattern (`pump-*`, `pump-[13]`) matched against the plant's assets:
- stop: ASSETS@HH:MM+DURATION (every day at that UTC time) or ASSETS@START+DURATION (once)
- outage: ASSETS@START+DURATION, no readings at all
- clock step: ASSETS@START-STEP, the assets' clock goes back by STEP at START
- slow sensor: SENSOR/FACTOR, the sensor reports every FACTOR-th reading only
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from vigil import durations
from vigil.synthetic import FAULTS, PUMP, Machine, fault_columns

FAULT_SYNTAX = "ASSET:KIND[/SENSOR]@START+DURATION, e.g. pump-3:bearing@2h+30m"
_FAULT = re.compile(r"(?P<asset>[^:@/+\s]+):(?P<kind>[A-Za-z]+)(?:/(?P<sensor>\w+))?"
                    r"@(?P<start>[^+]+)\+(?P<duration>.+)")


STOP_SYNTAX = "ASSETS@HH:MM+DURATION (daily, UTC) or ASSETS@START+DURATION (once), e.g. 'pump-*@22:00+6h'"
OUTAGE_SYNTAX = "ASSETS@START+DURATION, e.g. pump-2@3h+2h"
CLOCK_STEP_SYNTAX = "ASSETS@START-STEP, e.g. pump-1@5h-55m"
SLOW_SENSOR_SYNTAX = "SENSOR/FACTOR, e.g. temperature/10"
_SPAN = re.compile(r"(?P<assets>[^@\s]+)@(?P<start>[^+]+)\+(?P<duration>.+)")
_CLOCK_STEP = re.compile(r"(?P<assets>[^@\s]+)@(?P<start>[^-]+)-(?P<step>.+)")
_TIME_OF_DAY = re.compile(r"(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?")


class SimulationError(ValueError):
    """A simulation the user asked for cannot run as given; the message says what to change."""


@dataclass(frozen=True)
class Fault:
    """One injected fault: on `asset`, from `start` to `start + duration` seconds after the
    simulation start; sensor: the chosen sensor of a CHOOSABLE kind (None: its defaults)."""

    asset: str
    kind: str
    start: float
    duration: float
    sensor: str | None = None
    spec: str = ""


def parse_duration(text: str, what: str) -> float:
    """Seconds in a duration (vigil.durations); `what` names it in the error."""
    try:
        return durations.parse_duration(text)
    except ValueError as e:
        raise SimulationError(f"{what}: {e}") from None


def positive_duration(text: str, what: str) -> float:
    """parse_duration() for a duration that must be more than zero."""
    seconds = parse_duration(text, what)
    if not seconds > 0:
        raise SimulationError(f"{what}: {text!r} must be more than 0")
    return seconds


def parse_start(text: str) -> datetime:
    """A UTC start time from ISO 8601 (naive = UTC) or 'now' (this second)."""
    if text.strip().lower() == "now":
        return datetime.now(timezone.utc).replace(microsecond=0)
    t = text.strip()
    try:
        start = datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
    except ValueError:
        raise SimulationError(f"--start {text!r}: not an ISO 8601 time (e.g. 2026-01-01T00:00:00Z) or 'now'") from None
    return start.replace(tzinfo=timezone.utc) if start.tzinfo is None else start.astimezone(timezone.utc)


def parse_speed(text: str) -> float | None:
    """A time scale: '1' (real time), '10' or '10x' (ten times faster), 'max' (None: no pacing)."""
    t = text.strip().lower()
    if t == "max":
        return None
    try:
        speed = float(t[:-1] if t.endswith("x") else t)
    except ValueError:
        speed = math.nan
    if not (speed > 0 and math.isfinite(speed)):
        raise SimulationError(f"--speed {text!r}: use a factor above 0 (1 = real time, 10 or 10x) or 'max'")
    return speed


def parse_fault(text: str, machine: Machine = PUMP) -> Fault:
    """A Fault from ASSET:KIND[/SENSOR]@START+DURATION (SENSOR: one of the machine's)."""
    m = _FAULT.fullmatch(text.strip())
    if m is None:
        raise SimulationError(f"--fault {text!r}: expected {FAULT_SYNTAX}")
    kind = m["kind"].lower()
    if kind not in FAULTS:
        raise SimulationError(f"--fault {text!r}: unknown kind {m['kind']!r} (choose from {', '.join(FAULTS)})")
    try:
        fault_columns(kind, m["sensor"], machine)
    except ValueError as e:
        raise SimulationError(f"--fault {text!r}: {e}") from None
    start = parse_duration(m["start"], f"--fault {text!r}: START")
    duration = positive_duration(m["duration"], f"--fault {text!r}: DURATION")
    return Fault(m["asset"], kind, start, duration, m["sensor"], text.strip())


@dataclass(frozen=True)
class Stop:
    """Assets matching `assets` are switched off for `duration` seconds from `start`: seconds
    after the simulation start (once), or after midnight UTC every day when `daily`."""

    assets: str
    start: float
    duration: float
    daily: bool
    spec: str = ""


@dataclass(frozen=True)
class Outage:
    """No readings at all from assets matching `assets` for `duration` seconds from `start`
    (seconds after the simulation start): a gateway that is down."""

    assets: str
    start: float
    duration: float
    spec: str = ""


@dataclass(frozen=True)
class ClockStep:
    """The clock of assets matching `assets` steps back by `step` seconds at `start` (seconds
    after the simulation start): readings from then on carry times `step` earlier."""

    assets: str
    start: float
    step: float
    spec: str = ""


@dataclass(frozen=True)
class SlowSensor:
    """`sensor` reports only every `factor`-th reading (counted from the first)."""

    sensor: str
    factor: int
    spec: str = ""


def parse_stop(text: str) -> Stop:
    """A Stop from ASSETS@HH:MM+DURATION (daily) or ASSETS@START+DURATION (once)."""
    what = f"--stop {text!r}"
    m = _SPAN.fullmatch(text.strip())
    if m is None:
        raise SimulationError(f"{what}: expected {STOP_SYNTAX}")
    duration = positive_duration(m["duration"], f"{what}: DURATION")
    if ":" not in m["start"]:
        return Stop(m["assets"], parse_duration(m["start"], f"{what}: START"), duration, False, text.strip())
    tod = _TIME_OF_DAY.fullmatch(m["start"].strip())
    if tod is None or int(tod["h"]) > 23 or int(tod["m"]) > 59 or int(tod["s"] or 0) > 59:
        raise SimulationError(f"{what}: not a time of day: {m['start']!r} (use HH:MM or HH:MM:SS, UTC, e.g. 22:00)")
    if duration >= 86400:
        raise SimulationError(f"{what}: DURATION {m['duration']!r} must be shorter than a day for a daily stop")
    start = 3600 * int(tod["h"]) + 60 * int(tod["m"]) + int(tod["s"] or 0)
    return Stop(m["assets"], float(start), duration, True, text.strip())


def parse_outage(text: str) -> Outage:
    """An Outage from ASSETS@START+DURATION."""
    what = f"--outage {text!r}"
    m = _SPAN.fullmatch(text.strip())
    if m is None:
        raise SimulationError(f"{what}: expected {OUTAGE_SYNTAX}")
    return Outage(m["assets"], parse_duration(m["start"], f"{what}: START"),
                  positive_duration(m["duration"], f"{what}: DURATION"), text.strip())


def parse_clock_step(text: str) -> ClockStep:
    """A ClockStep from ASSETS@START-STEP."""
    what = f"--clock-step {text!r}"
    m = _CLOCK_STEP.fullmatch(text.strip())
    if m is None:
        raise SimulationError(f"{what}: expected {CLOCK_STEP_SYNTAX} (the clock goes back by STEP)")
    return ClockStep(m["assets"], parse_duration(m["start"], f"{what}: START"),
                     positive_duration(m["step"], f"{what}: STEP"), text.strip())


def parse_slow_sensor(text: str, machine: Machine = PUMP) -> SlowSensor:
    """A SlowSensor from SENSOR/FACTOR (SENSOR: one of the machine's)."""
    what = f"--slow-sensor {text!r}"
    sensor, slash, factor = text.strip().partition("/")
    if not slash:
        raise SimulationError(f"{what}: expected {SLOW_SENSOR_SYNTAX}")
    if sensor not in machine.sensors:
        raise SimulationError(f"{what}: unknown sensor {sensor!r} (choose from {', '.join(machine.sensors)})")
    if not (factor.isdigit() and int(factor) >= 2):
        raise SimulationError(f"{what}: FACTOR {factor!r} must be a whole number of at least 2 "
                              "(every FACTOR-th reading is reported)")
    return SlowSensor(sensor, int(factor), text.strip())


def parse_jitter(text: str) -> float:
    """Seconds of timestamp jitter (0: none)."""
    return parse_duration(text, "--jitter")
