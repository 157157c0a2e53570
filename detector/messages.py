"""Decoding sensor messages from Kafka into readings, or a dead-letter reason.

Key: the asset id (UTF-8). Value: JSON, one reading

    {"asset": "pump-7", "ts": "2026-11-23T19:00:00.123Z", "values": {"flow": 12.5, "pressure": null}}

or a batch of readings of one asset

    {"asset": "pump-7", "readings": [{"ts": 1795460400123, "values": {...}}, ...]}

`ts` is ISO 8601 (naive = UTC) or epoch milliseconds. A sensor that is null or absent is
a missing reading (masked); sensors the model does not know are ignored and counted.
Anything else is rejected with a BadMessage whose `reason` is a short metric label.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import chain
from operator import itemgetter

import numpy as np
import orjson

# Bounds on what a plausible reading looks like; outside them a message is dead-lettered.
MAX_MESSAGE_BYTES = 1 << 20
MAX_BATCH_READINGS = 10_000
MAX_ASSET_LENGTH = 200
MAX_ABS_VALUE = 1e12
EARLIEST_MS = 946_684_800_000        # 2000-01-01T00:00:00Z
MAX_FUTURE_MS = 24 * 3600 * 1000     # readings more than a day ahead of the clock are refused

_NUMBER_TYPES = frozenset({int, float, type(None)})

REASONS = (
    "oversized", "invalid_json", "not_an_object", "missing_asset", "bad_asset", "asset_key_mismatch",
    "missing_time", "bad_time", "time_out_of_range", "bad_values", "bad_value_type", "non_finite",
    "absurd_magnitude", "bad_batch", "out_of_order", "duplicate_time",
)


class BadMessage(ValueError):
    """A message that cannot be scored. reason: one of REASONS (a metric label)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def not_after(asset: str, ts_ms: int, last_ms: int) -> BadMessage:
    """The refusal of a reading at ts_ms that is not after the asset's last one at last_ms."""
    reason = "duplicate_time" if ts_ms == last_ms else "out_of_order"
    return BadMessage(reason, f"asset {asset!r}: reading at {ts_ms} ms after one at {last_ms} ms")


@dataclass(frozen=True)
class Decoded:
    """The readings of a sequence of records, in record order (one record's are contiguous)."""

    record: np.ndarray            # [n] int64: index of the record each reading came from
    assets: list[str]             # [n]
    times: np.ndarray             # [n] int64 epoch milliseconds
    values: np.ndarray            # [n, sensors] float32, NaN = missing
    unknown: np.ndarray           # [records] int64: sensors ignored in each record
    errors: dict[int, BadMessage]  # record index -> why it was refused


@dataclass(frozen=True)
class Message:
    """A decoded message: readings of one asset in message order.

    times: [n] int64 epoch milliseconds; values: [n, sensors] float32, NaN = missing.
    """

    asset: str
    times: np.ndarray
    values: np.ndarray
    unknown_sensors: int


def _reject_constant(name: str):
    raise BadMessage("non_finite", f"{name} is not a number JSON allows")


# The exact decoder, for what orjson refuses: it names NaN/Infinity tokens (refused) and
# accepts what JSON allows beyond orjson (integers over 64 bits, lone surrogates).
_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def _loads(value: bytes):
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return _JSON.decode(value.decode("utf-8"))


def _raise_magnitude(v) -> None:
    if isinstance(v, float) and math.isinf(v):
        raise BadMessage("non_finite", f"value {v!r}")
    raise BadMessage("absurd_magnitude", f"value {v!r} is beyond +-{MAX_ABS_VALUE:g}")


def parse_time(ts, now_ms: int) -> int:
    """A reading's time as epoch milliseconds."""
    if isinstance(ts, bool) or ts is None:
        raise BadMessage("bad_time" if ts is not None else "missing_time", f"ts {ts!r}")
    if isinstance(ts, (int, float)):
        if not math.isfinite(ts):
            raise BadMessage("bad_time", f"ts {ts!r}")
        ms = int(ts)
    elif isinstance(ts, str):
        try:
            dt = datetime.fromisoformat(ts[:-1] + "+00:00" if ts.endswith(("Z", "z")) else ts)
        except ValueError:
            raise BadMessage("bad_time", f"ts {ts[:64]!r} is not ISO 8601 or epoch milliseconds") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        ms = int(round(dt.timestamp() * 1000))
    else:
        raise BadMessage("bad_time", f"ts of type {type(ts).__name__}")
    if ms < EARLIEST_MS or ms > now_ms + MAX_FUTURE_MS:
        raise BadMessage("time_out_of_range", f"ts {ts!r} is before 2000 or more than a day in the future")
    return ms


class Decoder:
    """Turns message bytes into a Message for a model's sensors (in model order)."""

    def __init__(self, sensors: Sequence[str], max_bytes: int = MAX_MESSAGE_BYTES):
        self.sensors = tuple(sensors)
        self.index = {name: i for i, name in enumerate(self.sensors)}
        self.max_bytes = max_bytes
        get = itemgetter(*self.sensors)
        # a reading's values in model order; KeyError when a sensor is absent
        self._row_of = get if len(self.sensors) > 1 else (lambda values: (get(values),))
        self._valid_assets: set[str] = set()

    def _bad_value(self, values: dict) -> BadMessage:
        """The error for the first unacceptable value of a reading (slow path)."""
        for name, v in values.items():
            if name in self.index and v is not None and type(v) not in (int, float):
                return BadMessage("bad_value_type", f"sensor {name!r}: expected a number or null, got {type(v).__name__}")
        return BadMessage("bad_values", "values must be numbers or null")

    def _rows(self, readings: list, now_ms: int) -> tuple[list[int], list[list], int]:
        times, rows, unknown = [], [], 0
        sensors, known = self.sensors, self.index.keys()
        for n, reading in enumerate(readings):
            if type(reading) is not dict:
                raise BadMessage("bad_batch", f"reading {n} is not an object")
            if "ts" not in reading:
                raise BadMessage("missing_time", f"reading {n} has no 'ts'")
            times.append(parse_time(reading["ts"], now_ms))
            values = reading.get("values")
            if type(values) is not dict:
                raise BadMessage("bad_values", f"reading {n}: values must be an object, got {type(values).__name__}")
            row = [values.get(name) for name in sensors]
            if not set(map(type, row)) <= _NUMBER_TYPES:
                raise self._bad_value(values)
            unknown += len(values.keys() - known)
            rows.append(row)
        return times, rows, unknown

    def decode(self, value: bytes | None, key: bytes | None = None, now_ms: int | None = None) -> Message:
        """Decode one Kafka record value (and key); raises BadMessage."""
        if value is None:
            raise BadMessage("invalid_json", "empty record (tombstone)")
        if len(value) > self.max_bytes:
            raise BadMessage("oversized", f"{len(value)} bytes > {self.max_bytes}")
        try:
            doc = _loads(value)
        except BadMessage:
            raise
        except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise BadMessage("invalid_json", str(e)[:200]) from None
        if not isinstance(doc, dict):
            raise BadMessage("not_an_object", f"top level is {type(doc).__name__}")
        asset = doc.get("asset")
        if asset is None:
            raise BadMessage("missing_asset", "no 'asset'")
        if not isinstance(asset, str) or not asset or len(asset) > MAX_ASSET_LENGTH or not asset.isprintable():
            raise BadMessage("bad_asset", f"asset must be a printable string of 1-{MAX_ASSET_LENGTH} characters")
        if key is not None and key != asset.encode():
            raise BadMessage("asset_key_mismatch", "the record key is not the asset id")
        if now_ms is None:
            now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
        if "readings" in doc:
            readings = doc["readings"]
            if not isinstance(readings, list) or not readings or len(readings) > MAX_BATCH_READINGS:
                raise BadMessage("bad_batch", f"readings must be a list of 1-{MAX_BATCH_READINGS} readings")
        else:
            readings = [doc]
        times, rows, unknown = self._rows(readings, now_ms)
        if len(rows) == 1:  # the common single reading: plain Python checks are cheaper than numpy's
            for v in rows[0]:
                if v is not None and not -MAX_ABS_VALUE <= v <= MAX_ABS_VALUE:
                    _raise_magnitude(v)
            values = np.array(rows, dtype=np.float32)
        else:
            try:
                values = np.array(rows, dtype=np.float64)  # None -> NaN (missing)
            except OverflowError:
                raise BadMessage("absurd_magnitude", f"a value is beyond +-{MAX_ABS_VALUE:g}") from None
            with np.errstate(invalid="ignore"):
                bad = np.abs(values) > MAX_ABS_VALUE
            if bad.any():
                _raise_magnitude(values[bad][0])
            values = values.astype(np.float32)
        times = np.array(times, np.int64)
        if times.size > 1:
            backwards = np.diff(times) <= 0
            if backwards.any():
                i = int(np.argmax(backwards))
                reason = "duplicate_time" if times[i + 1] == times[i] else "out_of_order"
                raise BadMessage(reason, f"asset {asset!r}: readings {i} and {i + 1} of the batch are not in time order")
        return Message(asset, times, values, unknown)

    def decode_batch(self, values: Sequence[bytes | None], keys: Sequence[bytes | None],
                     now_ms: int | None = None) -> Decoded:
        """Decode many records: the same readings and errors as decode() on each, faster.

        The common shape (one reading, epoch-millisecond time, every model sensor a number or
        null) is checked for the whole batch at once; any other record goes through decode()."""
        if now_ms is None:
            now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
        fast, assets, times, rows, sizes, slow = [], [], [], [], [], []
        loads, row_of, max_bytes = orjson.loads, self._row_of, self.max_bytes
        for i, value in enumerate(values):
            try:
                doc = loads(value)
                readings = doc["values"]
                row = row_of(readings)
                asset, ts = doc["asset"], doc["ts"]
                if "readings" in doc or len(value) > max_bytes:
                    raise ValueError
            except Exception:  # anything unusual: decode() says exactly what, or decodes it
                slow.append(i)
                continue
            fast.append(i)
            assets.append(asset)
            times.append(ts)
            rows.append(row)
            sizes.append(len(readings))
        ok, times, rows = self._check_fast(assets, times, rows, [keys[i] for i in fast], now_ms)
        if not ok.all():
            slow = sorted(slow + [fast[j] for j in np.flatnonzero(~ok).tolist()])
            keep = np.flatnonzero(ok)
            fast = [fast[j] for j in keep.tolist()]
            assets = [assets[j] for j in keep.tolist()]
            times, rows, sizes = times[keep], rows[keep], np.asarray(sizes, np.int64)[keep]
        unknown = np.zeros(len(values), np.int64)
        unknown[fast] = np.asarray(sizes, np.int64) - len(self.sensors)
        errors: dict[int, BadMessage] = {}
        messages: list[tuple[int, Message]] = []
        for i in slow:
            try:
                messages.append((i, self.decode(values[i], keys[i], now_ms)))
            except BadMessage as e:
                errors[i] = e
        record = np.asarray(fast, np.int64)
        if messages:  # merge the decode() readings in, in record order
            counts = [len(m.times) for _, m in messages]
            record = np.concatenate([record, np.repeat([i for i, _ in messages], counts)])
            order = np.argsort(record, kind="stable")
            record = record[order]
            times = np.concatenate([times, *[m.times for _, m in messages]])[order]
            rows = np.concatenate([rows, *[m.values for _, m in messages]])[order]
            merged = assets + [m.asset for _, m in messages for _ in m.times]
            assets = [merged[j] for j in order.tolist()]
            for i, m in messages:
                unknown[i] = m.unknown_sensors
        return Decoded(record, assets, times, rows, unknown, errors)

    def _check_fast(self, assets: list, times: list, rows: list, keys: list, now_ms: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which fast-path readings are acceptable as they are: (ok [n] bool, times [n] int64,
        values [n, sensors] float32); the others go through decode()."""
        n = len(assets)
        ok = np.ones(n, bool)
        if set(map(type, assets)) != {str}:
            ok &= np.array([type(a) is str for a in assets], bool)
        valid = self._valid_assets
        for a in set(a for a, good in zip(assets, ok) if good) - valid if n else ():
            if 0 < len(a) <= MAX_ASSET_LENGTH and a.isprintable():
                if len(valid) >= 100_000:  # a cache, not a registry: bounded under floods of ids
                    valid.clear()
                valid.add(a)
        if not (ok.all() and set(assets) <= valid and list(map(str.encode, assets)) == list(keys)):
            ok &= np.array([good and a in valid and (k is None or k == a.encode())
                            for a, k, good in zip(assets, keys, ok)], bool)
        if set(map(type, times)) - {int}:
            ok &= np.array([type(t) is int for t in times], bool)
            times = [t if good else 0 for t, good in zip(times, ok)]
        try:
            stamps = np.array(times, np.int64)
        except OverflowError:
            ok &= np.array([-(1 << 63) <= t < (1 << 63) for t in times], bool)
            stamps = np.array([t if good else 0 for t, good in zip(times, ok)], np.int64)
        ok &= (stamps >= EARLIEST_MS) & (stamps <= now_ms + MAX_FUTURE_MS)
        if not set(map(type, chain.from_iterable(rows))) <= _NUMBER_TYPES:
            ok &= np.array([set(map(type, row)) <= _NUMBER_TYPES for row in rows], bool)
            rows = [row if good else (None,) * len(self.sensors) for row, good in zip(rows, ok)]
        try:
            values = np.array(rows, np.float64).reshape(n, len(self.sensors))  # None -> NaN (missing)
        except OverflowError:  # integers beyond float range
            ok &= np.array([all(v is None or abs(v) <= MAX_ABS_VALUE for v in row) for row in rows], bool)
            values = np.array([row if good else (None,) * len(self.sensors) for row, good in zip(rows, ok)],
                              np.float64).reshape(n, len(self.sensors))
        ok &= ~(np.abs(values) > MAX_ABS_VALUE).any(axis=1)  # NaN compares False: missing is fine
        values[~ok] = 0.0  # refused rows are dropped; they must not overflow float32 meanwhile
        return ok, stamps, values.astype(np.float32)
