"""The pump signal model: seven correlated sensors driven by a load, and the faults injected.

Each sensor is `base + gain * drive + noise * N(0, 1)`, where the drive is the pump's load
(temperature's is a lagged, slow load). Faults change chosen rows in place and are labelled
in an `anomaly` column. `vigil simulate` (vigil/simulate.py) runs a plant of such pumps;
generate() below is the small single-pump data set used by `vigil demo` and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from vigil import csvformat

SENSORS = ("vibration_x", "vibration_y", "motor_current", "voltage", "pressure", "temperature", "flow")
DECIMALS = (4, 4, 3, 2, 4, 3, 3)  # digits after the point when written (CSV cells, messages)
FAULTS = ("bearing", "cavitation", "stuck", "dropout", "step")
# The sensors each fault changes; for stuck, dropout and step these are the defaults and
# one sensor can be chosen instead (CHOOSABLE).
FAULT_SENSORS = {
    "bearing": ("vibration_x", "vibration_y", "temperature"),
    "cavitation": ("vibration_x", "pressure", "flow"),
    "stuck": ("pressure", "flow"),
    "dropout": ("flow",),
    "step": ("motor_current",),
}
CHOOSABLE = ("stuck", "dropout", "step")
# Faults of the running machine: they fade with it when it is switched off (simulate's stops);
# the others are the sensors' own and stay.
MACHINE_FAULTS = ("bearing", "cavitation")
FAULT_NOISE = {"bearing": 1, "cavitation": 2}  # standard-normal noise columns a fault uses per row
NOISE_COLUMNS = max(FAULT_NOISE.values())
STEP = np.array([0.4, 0.3, 3.0, 15.0, 0.6, 5.0, 8.0])  # step fault size per sensor

_COL = {name: i for i, name in enumerate(SENSORS)}
_VIB_X, _VIB_Y, _PRESSURE, _TEMPERATURE, _FLOW = (_COL[n] for n in ("vibration_x", "vibration_y", "pressure",
                                                                    "temperature", "flow"))

# A stopped pump reads its sensors' floor: no vibration, current or flow, the pressure of the
# standing column; its supply voltage is unchanged and it cools towards ambient (about 25 C):
# OFF_DRIVE is the temperature drive of a stopped pump (base 55 + gain 10 x -3).
OFF_SENSORS = ("vibration_x", "vibration_y", "motor_current", "pressure", "flow")
_OFF_COLS = [_COL[n] for n in OFF_SENSORS]
OFF_LEVEL = np.array([0.02, 0.02, 0.0, 0.3, 0.0])   # per OFF_SENSORS
OFF_NOISE = np.array([0.01, 0.01, 0.02, 0.02, 0.05])  # x |N(0, 1)|: never below the level
OFF_DRIVE = -3.0


@dataclass(frozen=True)
class PumpParams:
    """One pump's sensor model, per sensor [7]: sensor = base + gain * drive + noise * N(0, 1)."""

    base: np.ndarray
    gain: np.ndarray
    noise: np.ndarray


#                  vib_x vib_y current voltage pressure temp  flow   (mm/s RMS, A, V, bar, C, m3/h)
NOMINAL = PumpParams(base=np.array([0.8, 0.6, 5.0, 230.0, 2.0, 55.0, 20.0]),
                     gain=np.array([0.5, 0.4, 6.0, 0.0, 1.5, 10.0, 25.0]),
                     noise=np.array([0.03, 0.03, 0.15, 1.5, 0.05, 0.2, 0.5]))


def pump_params(rng: np.random.Generator) -> PumpParams:
    """A pump like NOMINAL with its own small differences (baselines ~3 %, gains ~8 %, noise ~10 %)."""
    def vary(x: np.ndarray, spread: float) -> np.ndarray:
        return x * np.clip(1 + spread * rng.standard_normal(len(x)), 0.5, 1.5)

    return PumpParams(vary(NOMINAL.base, 0.03), vary(NOMINAL.gain, 0.08), vary(NOMINAL.noise, 0.1))


def readings(load: np.ndarray, slow: np.ndarray, params: PumpParams, z: np.ndarray) -> np.ndarray:
    """Sensor values [rows, 7] from the load and the slow load [rows] and standard normals z [rows, 7]."""
    drive = np.repeat(load[:, None], len(SENSORS), axis=1)
    drive[:, _TEMPERATURE] = slow
    return params.base + params.gain * drive + params.noise * z


def stopped(rows: np.ndarray, run: np.ndarray, z: np.ndarray) -> None:
    """Blend readings rows [n, 7], in place, towards a stopped pump's: run [n] is 1 running,
    0 stopped, between on the ramps; z [n, 7] the rows' standard normals (the floor's noise).
    Temperature is left alone: it follows a drive blended with OFF_DRIVE through its lag."""
    off = OFF_LEVEL + OFF_NOISE * np.abs(z[:, _OFF_COLS])
    r = run[:, None]
    rows[:, _OFF_COLS] = r * rows[:, _OFF_COLS] + (1 - r) * off


@dataclass(frozen=True)
class Machine:
    """A kind of machine `vigil simulate` runs: the sensors it reports, each one of the pump
    model's columns (`columns` into SENSORS) rescaled, value = pump value x scale. A fan is
    driven by the same load, so its faults are the pump's, seen on the sensors it has."""

    kind: str
    sensors: tuple[str, ...]
    columns: tuple[int, ...]
    scale: tuple[float, ...]
    decimals: tuple[int, ...]  # digits after the point when written

    def readings(self, values: np.ndarray) -> np.ndarray:
        """Pump-model values [..., 7] -> this machine's readings [..., sensors]."""
        if self.columns == tuple(range(len(SENSORS))) and set(self.scale) == {1.0}:
            return values
        return values[..., list(self.columns)] * np.asarray(self.scale)

    def column(self, sensor: str) -> int:
        """The pump-model column behind one of this machine's sensors; ValueError naming the choices."""
        if sensor not in self.sensors:
            raise ValueError(f"unknown sensor {sensor!r} of a {self.kind} (choose from {', '.join(self.sensors)})")
        return self.columns[self.sensors.index(sensor)]

    def names(self, columns: list[int]) -> list[str]:
        """This machine's sensors behind pump-model columns (those it has)."""
        return [self.sensors[self.columns.index(j)] for j in columns if j in self.columns]


PUMP = Machine("pump", SENSORS, tuple(range(len(SENSORS))), (1.0,) * len(SENSORS), DECIMALS)
#           vibration (mm/s)  current (A)  speed (rpm) <- voltage  bearing temp. (C)  airflow (m3/h) <- flow
FAN = Machine("fan", ("vibration", "motor_current", "speed", "bearing_temperature", "airflow"),
              (_COL["vibration_x"], _COL["motor_current"], _COL["voltage"], _COL["temperature"], _COL["flow"]),
              (1.0, 0.5, 6.4, 1.0, 60.0), (4, 3, 1, 3, 1))
MACHINES = {m.kind: m for m in (PUMP, FAN)}


def fault_columns(kind: str, sensor: str | None = None, machine: Machine = PUMP) -> list[int]:
    """The pump-model columns a fault changes: FAULT_SENSORS[kind], or `sensor` (one of the
    machine's) for a CHOOSABLE kind."""
    if kind not in FAULT_SENSORS:
        raise ValueError(f"unsupported fault kind: {kind!r} (choose from {FAULTS})")
    if sensor is None:
        columns = [_COL[name] for name in FAULT_SENSORS[kind]]
        if not machine.names(columns):
            raise ValueError(f"a {kind} fault changes {', '.join(FAULT_SENSORS[kind])}, none of which a "
                             f"{machine.kind} has")
        return columns
    if kind not in CHOOSABLE:
        shown = machine.names([_COL[name] for name in FAULT_SENSORS[kind]])
        raise ValueError(f"a {kind} fault always changes {', '.join(shown)}; "
                         f"only {', '.join(CHOOSABLE)} take a /SENSOR")
    return [machine.column(sensor)]


def inject(kind: str, rows: np.ndarray, progress: np.ndarray, z: np.ndarray, cols: list[int],
           held: np.ndarray) -> None:
    """Apply one fault, in place, to the readings rows [n, 7] inside it.

    progress: [n] 0 at the fault's first row up to 1 at its last; z: [n, NOISE_COLUMNS]
    standard normals; cols: fault_columns(); held: [len(cols)] the readings at the fault's
    first row (what a stuck sensor keeps showing).
    """
    if kind == "bearing":  # wear: vibration and temperature ramp up, vibration gets rougher
        rows[:, _VIB_X] += 1.2 * progress + 0.1 * z[:, 0] * progress
        rows[:, _VIB_Y] += 0.8 * progress
        rows[:, _TEMPERATURE] += 6.0 * progress
    elif kind == "cavitation":  # suction pressure collapses, flow drops, vibration bursts
        rows[:, _PRESSURE] -= 0.8 + 0.3 * z[:, 0]
        rows[:, _FLOW] -= 8.0
        rows[:, _VIB_X] += np.abs(0.4 * z[:, 1])
    elif kind == "stuck":
        rows[:, cols] = held
    elif kind == "dropout":
        rows[:, cols] = np.nan
    elif kind == "step":
        rows[:, cols] += STEP[cols]
    else:
        raise ValueError(f"unsupported fault kind: {kind!r} (choose from {FAULTS})")


def generate(rows: int, seed: int = 0, faults: tuple[tuple[str, int, int], ...] = (),
             cycle_seconds: float = 900.0) -> tuple[np.ndarray, np.ndarray]:
    """One nominal pump: readings [rows, 7] at 1 Hz and labels [rows] (1 inside an injected fault).

    Its load is a fast cycle plus a bounded random walk. faults: (kind, first_row, length)
    tuples; kinds are FAULTS, each changing its default FAULT_SENSORS.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(rows, dtype=np.float64)
    walk = np.cumsum(rng.normal(0, 0.02, rows))
    span = min(301, rows)  # (a shorter series: its own length, so the result keeps its length)
    walk -= np.convolve(walk, np.ones(span) / span, mode="same")  # keep the walk bounded
    load = 0.6 + 0.25 * np.sin(2 * np.pi * t / cycle_seconds) + 0.1 * walk
    z = np.stack([rng.standard_normal(rows) for _ in SENSORS], axis=1)
    values = readings(load, _lag(load, 120), NOMINAL, z)
    labels = np.zeros(rows, np.int8)
    for kind, start, length in faults:
        end = min(start + length, rows)
        cols = fault_columns(kind)
        fz = np.zeros((end - start, NOISE_COLUMNS))
        for c in range(FAULT_NOISE.get(kind, 0)):
            fz[:, c] = rng.standard_normal(end - start)
        inject(kind, values[start:end], np.linspace(0.0, 1.0, end - start), fz, cols, values[start, cols])
        labels[start:end] = 1
    return values, labels


def _lag(signal: np.ndarray, span: int) -> np.ndarray:
    """Trailing moving average (a slow sensor), padded with the first value at the start."""
    padded = np.concatenate([np.full(span - 1, signal[0]), signal])
    return np.convolve(padded, np.ones(span) / span, mode="valid")


def header(labels: bool, machine: Machine = PUMP) -> bytes:
    """The CSV header line: timestamp, the sensors, and `anomaly` when there are labels."""
    return (",".join(["timestamp", *machine.sensors] + (["anomaly"] if labels else [])) + "\n").encode()


def csv_rows(stamps: np.ndarray, values: np.ndarray, labels: np.ndarray | None = None,
             machine: Machine = PUMP) -> bytes:
    """CSV lines from csvformat.timestamps() [rows, width], readings [rows, sensors] (NaN -> empty
    cell) and labels [rows]."""
    cells = [stamps, *(csvformat.numbers(values[:, j], d) for j, d in enumerate(machine.decimals))]
    return csvformat.lines(cells + ([csvformat.numbers(labels, 0)] if labels is not None else []))


def write_csv(path: str | Path, values: np.ndarray, labels: np.ndarray | None = None,
              start: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)) -> Path:
    """Write 1 Hz readings (and labels) as a CSV with an ISO `timestamp` first column."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamps = csvformat.timestamps(start.timestamp() + np.arange(len(values), dtype=np.float64))
    path.write_bytes(header(labels is not None) + csv_rows(stamps, values, labels))
    return path
