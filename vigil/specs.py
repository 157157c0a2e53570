"""What a user writes on the simulator's command line: start times, speeds, faults.

Fault spec: ASSET:KIND[/SENSOR]@START+DURATION, START counted from the simulation start,
for example `pump-3:bearing@2h+30m` or `pump-1:stuck/pressure@1.5d+45m`; durations are
vigil.durations' (90s, 30m, 2h, 1d, 1w, 1.5h; a bare number is seconds). Every parse error
names the text it could not read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from vigil import durations
from vigil.synthetic import FAULTS, fault_columns

FAULT_SYNTAX = "ASSET:KIND[/SENSOR]@START+DURATION, e.g. pump-3:bearing@2h+30m"
_FAULT = re.compile(r"(?P<asset>[^:@/+\s]+):(?P<kind>[A-Za-z]+)(?:/(?P<sensor>\w+))?"
                    r"@(?P<start>[^+]+)\+(?P<duration>.+)")


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


def parse_fault(text: str) -> Fault:
    """A Fault from ASSET:KIND[/SENSOR]@START+DURATION."""
    m = _FAULT.fullmatch(text.strip())
    if m is None:
        raise SimulationError(f"--fault {text!r}: expected {FAULT_SYNTAX}")
    kind = m["kind"].lower()
    if kind not in FAULTS:
        raise SimulationError(f"--fault {text!r}: unknown kind {m['kind']!r} (choose from {', '.join(FAULTS)})")
    try:
        fault_columns(kind, m["sensor"])
    except ValueError as e:
        raise SimulationError(f"--fault {text!r}: {e}") from None
    start = parse_duration(m["start"], f"--fault {text!r}: START")
    duration = positive_duration(m["duration"], f"--fault {text!r}: DURATION")
    return Fault(m["asset"], kind, start, duration, m["sensor"], text.strip())
