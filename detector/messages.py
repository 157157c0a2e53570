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

import numpy as np

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


# One decoder for all messages (json.loads would build one per call); NaN/Infinity tokens are refused.
_JSON = json.JSONDecoder(parse_constant=_reject_constant)


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
            doc = _JSON.decode(value.decode("utf-8"))
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
        return Message(asset, np.array(times, np.int64), values, unknown)
