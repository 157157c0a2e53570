"""Producing readings to Kafka at a time scale: `vigil simulate` (live) and `vigil replay`.

Messages are detector.messages' format, keyed by asset id: one reading per message
`{"asset": "pump-1", "ts": "2026-01-01T00:00:00Z", "values": {"flow": 31.8, "pressure": null}}`
while paced, batches `{"asset": ..., "readings": [{"ts": ..., "values": {...}}, ...]}` at
--speed max. Pacing: a reading whose time is x seconds after the first one is sent x / speed
seconds after the start. A stop Event (set by SIGINT/SIGTERM, see stop_on_signals) ends a
run between steps; what was sent is then flushed.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from kafka.errors import KafkaError

from detector.table import SensorTable
from detector.messages import EARLIEST_MS, MAX_FUTURE_MS
from vigil import csvformat
from vigil.simulate import Fleet

STEP_ROWS = 1000         # rows produced per step at most
BATCH_CELLS = 20_000     # readings x sensors per batch message at most (well under 1 MB)


class Sink(Protocol):
    """Where messages go: a KafkaSink, or an in-memory list in tests."""

    def send(self, key: bytes, value: bytes) -> None: ...


class DeliveryError(KafkaError):
    """Some messages were not acknowledged by the broker."""


class KafkaSink:
    """Sends to one topic with kafka-python's KafkaProducer (acks=all); close() flushes and
    raises DeliveryError when a message was not delivered."""

    def __init__(self, bootstrap_servers: str, topic: str, checked: bool = False):
        """checked: the caller has run the pre-flight check of these brokers already."""
        from kafka import KafkaProducer

        from detector.kafka_client import client_options, preflight
        from detector.settings import security_from_env

        security = security_from_env()  # TLS / SASL from VIGIL_KAFKA_* like every other command
        if not checked:
            preflight(security, bootstrap_servers)
        self.topic = topic
        self.sent = self.failed = 0
        self.error: BaseException | None = None
        self._producer = KafkaProducer(**client_options(
            security, bootstrap_servers=bootstrap_servers.split(","), acks="all", linger_ms=5,
            bootstrap_timeout_ms=10_000, max_block_ms=10_000, client_id="vigil-producer"))

    def send(self, key: bytes, value: bytes) -> None:
        self._producer.send(self.topic, key=key, value=value).add_errback(self._failed)
        self.sent += 1

    def _failed(self, error: BaseException) -> None:
        self.failed += 1
        self.error = self.error or error

    def close(self) -> None:
        try:
            self._producer.flush(timeout=30)
        finally:
            self._producer.close(timeout=10)
        if self.failed:
            raise DeliveryError(f"{self.failed} of {self.sent} messages to {self.topic} were not delivered: "
                                f"{self.error}")

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # keep the original error; still release the producer
            self._producer.close(timeout=5)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An Event set by SIGINT (Ctrl-C) or SIGTERM while inside; the old handlers come back after."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Pacer:
    """Wall time for data time: `offset` seconds of data are due offset / speed seconds after
    the start (speed None: at once)."""

    def __init__(self, speed: float | None, stop: threading.Event, clock: Callable[[], float] = time.monotonic):
        self.speed, self.stop, self.clock = speed, stop, clock
        self.start = clock()

    def due(self) -> float:
        """Seconds of data due by now."""
        return math.inf if self.speed is None else (self.clock() - self.start) * self.speed

    def wait_until(self, offset: float) -> bool:
        """Wait until `offset` seconds of data are due; False if stopped first."""
        if self.speed is not None:
            delay = offset / self.speed - (self.clock() - self.start)
            if delay > 0:
                self.stop.wait(delay)
        return not self.stop.is_set()


def _stream(pacer: Pacer, offset: Callable[[int], float], rows_due: Callable[[float], int], total: int | None,
            emit: Callable[[int, int], None]) -> int:
    """Call emit(first, end) for consecutive row ranges as they fall due; returns the rows emitted.

    offset(row): the row's data time (seconds since row 0); rows_due(t): how many rows have
    an offset <= t. At most STEP_ROWS rows per call; stops at `total` or when stopped.
    """
    done = 0
    while (total is None or done < total) and pacer.wait_until(offset(done)):
        end = done + STEP_ROWS if pacer.speed is None else max(done + 1, min(rows_due(pacer.due()), done + STEP_ROWS))
        if total is not None:
            end = min(end, total)
        emit(done, end)
        done = end
    return done


def iso_stamps(seconds: np.ndarray, millis: bool) -> list[str]:
    """ISO 8601 UTC strings of epoch seconds [rows]."""
    cells = csvformat.timestamps(seconds, millis)
    return cells.view(f"S{cells.shape[1]}").ravel().astype(str).tolist()


def encode(asset: str, stamps: Sequence[str], values: np.ndarray, sensors: Sequence[str], batch: bool) -> list[bytes]:
    """Message values for readings of one asset: stamps [rows], values [rows, sensors] (NaN -> null);
    one message per reading, or batches of up to BATCH_CELLS cells."""
    cells = values.astype(object)
    cells[np.isnan(values)] = None
    readings = [{"ts": ts, "values": dict(zip(sensors, row))} for ts, row in zip(stamps, cells.tolist())]
    if not batch:
        return [json.dumps({"asset": asset, **r}, separators=(",", ":")).encode() for r in readings]
    per = max(1, BATCH_CELLS // max(len(sensors), 1))
    return [json.dumps({"asset": asset, "readings": readings[i:i + per]}, separators=(",", ":")).encode()
            for i in range(0, len(readings), per)]


def in_order_runs(ms: np.ndarray, latest: float) -> list[tuple[int, int]]:
    """Consecutive readings [first, end) of one asset that vigil serve takes or refuses as a
    whole: each run in time order, and either all after the latest time before it or none.
    ms: [n] reading times (epoch ms); latest: the latest time before them (-inf: none)."""
    before = np.maximum.accumulate(np.r_[latest, ms])[:-1]
    behind = ms <= before
    cuts = np.flatnonzero((np.diff(ms) <= 0) | (behind[1:] != behind[:-1])) + 1
    bounds = [0, *cuts.tolist(), len(ms)]
    return list(zip(bounds[:-1], bounds[1:]))


def shortest(values: np.ndarray) -> np.ndarray:
    """float32 values as float64 numbers with the fewest significant digits (6-9) that read
    back as the same float32, so 0.8123 is sent as 0.8123 and not 0.8123000264167786."""
    x32 = np.asarray(values, np.float32).ravel()
    x = x32.astype(np.float64)
    out = x.copy()
    todo = np.isfinite(x) & (x != 0)
    with np.errstate(divide="ignore"):
        exponent = np.floor(np.log10(np.abs(np.where(todo, x, 1.0))))
    for digits in (6, 7, 8, 9):
        if not todo.any():
            break
        keep = digits - 1 - exponent[todo]  # decimals kept; negative for large numbers
        scale = 10.0 ** np.abs(keep)  # exact powers of ten: the results are correctly rounded
        rounded = np.where(keep >= 0, np.rint(x[todo] * scale) / scale, np.rint(x[todo] / scale) * scale)
        ok = rounded.astype(np.float32) == x32[todo]
        idx = np.flatnonzero(todo)[ok]
        out[idx] = rounded[ok]
        todo[idx] = False
    return out.reshape(np.shape(values))


@dataclass(frozen=True)
class Produced:
    """What a run sent: readings, messages, first and last reading time, wall seconds."""

    readings: int
    messages: int
    first: str | None
    last: str | None
    seconds: float

    def describe(self) -> str:
        times = f", reading times {self.first} .. {self.last}" if self.first else ""
        return f"produced {self.readings:,} readings in {self.messages:,} messages in {self.seconds:.1f}s{times}"


class _Tally:
    def __init__(self):
        self.readings = self.messages = 0
        self.first = self.last = None
        self.t0 = time.perf_counter()

    def add(self, readings: int, messages: int, stamps: Sequence[str]) -> None:
        self.readings, self.messages = self.readings + readings, self.messages + messages
        self.first, self.last = self.first or stamps[0], stamps[-1]

    def done(self) -> Produced:
        return Produced(self.readings, self.messages, self.first, self.last, time.perf_counter() - self.t0)


def produce_fleet(fleet: Fleet, rows: int | None, sink: Sink, speed: float | None, stop: threading.Event) -> Produced:
    """Produce the fleet's readings, `rows` per asset (None: until stopped), paced at `speed`.

    Paced by when readings are due; each carries the time its asset's clock gives it (jitter,
    clock steps), and an outage sends nothing, as in the CSV files. After a clock step,
    batches are cut where time goes back and where it passes the latest time sent, so that
    vigil serve refuses exactly the readings it would refuse one by one."""
    config, tally = fleet.config, _Tally()
    keys = [name.encode() for name in config.assets]
    latest = [-math.inf] * len(config.assets)  # each asset's latest reading time sent, ms

    def emit(first: int, end: int) -> None:
        chunk = fleet.chunk(end - first)
        shared = iso_stamps(chunk.seconds, config.millis) if chunk.uniform else None
        for i, (asset, key) in enumerate(zip(config.assets, keys)):
            seconds, values, _ = chunk.asset(i)
            if not len(seconds):  # an outage
                continue
            stamps = shared if shared is not None else iso_stamps(seconds, config.millis)
            rounded = np.column_stack([np.round(values[:, j], d) for j, d in enumerate(config.machine.decimals)])
            if config.clock_steps:  # batches in order, each all refused or all taken by vigil serve
                ms = np.rint(seconds * 1000)
                runs, latest[i] = in_order_runs(ms, latest[i]), max(latest[i], ms.max())
            else:
                runs = [(0, len(stamps))]
            messages = [m for a, b in runs
                        for m in encode(asset, stamps[a:b], rounded[a:b], config.machine.sensors, batch=speed is None)]
            for m in messages:
                sink.send(key, m)
            tally.add(len(stamps), len(messages), stamps)

    _stream(Pacer(speed, stop), lambda r: r * config.interval, lambda t: int(t / config.interval) + 1, rows, emit)
    return tally.done()


def replay(table: SensorTable, asset: str, sink: Sink, speed: float | None, stop: threading.Event,
           shift: float = 0.0) -> Produced:
    """Produce a table's rows as `asset`'s readings at `speed`, their times moved by `shift` seconds."""
    offsets = table.time - table.time[0]
    seconds = table.time + shift
    millis = bool(np.any(np.rint(seconds * 1000) % 1000))
    key, tally = asset.encode(), _Tally()

    def emit(first: int, end: int) -> None:
        stamps = iso_stamps(seconds[first:end], millis)
        messages = encode(asset, stamps, shortest(table.values[first:end]), table.sensors, batch=speed is None)
        for m in messages:
            sink.send(key, m)
        tally.add(end - first, len(messages), stamps)

    _stream(Pacer(speed, stop), lambda r: offsets[r], lambda t: int(np.searchsorted(offsets, t, side="right")),
            table.rows, emit)
    return tally.done()


def clock_notes(first: float, span: float | None, speed: float | None, now: float) -> list[str]:
    """Warnings about reading times vigil serve would refuse: before 2000, or more than a day
    ahead of the clock. first: the first reading's epoch seconds; span: seconds of data (None: no end)."""
    notes = []
    if first * 1000 < EARLIEST_MS:
        notes.append("readings before 2000 are refused by vigil serve (time_out_of_range)")
    limit, lead = MAX_FUTURE_MS / 1000, first - now
    gain = 1.0 if speed is None else 1 - 1 / speed  # how fast readings pull ahead of the clock
    if lead > limit:
        notes.append("readings start more than a day ahead of the clock: vigil serve refuses them")
    elif gain > 0 and lead + gain * (math.inf if span is None else span) > limit:
        when = "" if speed is None else f" after about {(limit - lead) / gain / speed / 60:.0f} min"
        notes.append(f"readings will be more than a day ahead of the clock{when}, "
                     "and vigil serve refuses those (time_out_of_range)")
    return notes
