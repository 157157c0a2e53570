"""CSV text for numeric tables, built column-wise: ISO timestamps, fixed-point numbers.

Python's per-cell formatting costs about a microsecond a cell, and the simulator writes
millions of rows, so lines are built with numpy instead: each column becomes a byte
matrix [rows, width] with its cells right-aligned and unused bytes 0; `lines` joins the
matrices with delimiters and drops the zero bytes, which leaves variable-length cells.
A NaN becomes an empty cell (a missing reading for detector.csvdata).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_MAX_SCALED = 2.0**53  # |value| x 10**decimals must stay an exact integer


def _put_digits(out: np.ndarray, last: int, x: np.ndarray, width: int, blank_leading: bool = False) -> None:
    """Write x [rows] (integers below 10**width) as `width` decimal digits ending at column
    `last` of out, zero-padded or, with blank_leading, with leading zeros left unused (0)."""
    if len(x) and x.max() < 2**32:
        x = x.astype(np.uint32)  # divides about twice as fast as int64
    rest = x
    for k in range(width):
        rest, digit = np.divmod(rest, 10)
        cell = digit.astype(np.uint8) + np.uint8(ord("0"))
        if blank_leading and k:
            cell *= x >= 10**k
        out[:, last - k] = cell


def _civil(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year, month, day of days since 1970-01-01 (H. Hinnant's civil_from_days)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (month <= 2), month, day


def timestamps(seconds: np.ndarray, millis: bool = False) -> np.ndarray:
    """UTC ISO 8601 cells of epoch seconds [rows]: uint8 [rows, 20] `2026-01-01T00:00:00Z`,
    or [rows, 24] `2026-01-01T00:00:00.000Z` with millis (rounded to the millisecond)."""
    t = np.asarray(seconds, np.float64)
    if millis:
        secs, frac = np.divmod(np.rint(t * 1000).astype(np.int64), 1000)
    else:
        secs = np.rint(t).astype(np.int64)
    days, tod = np.divmod(secs, 86_400)
    year, month, day = _civil(days)
    if len(year) and (year.min() < 1 or year.max() > 9999):
        raise ValueError("timestamps must fall in the years 1-9999")
    out = np.empty((len(t), 24 if millis else 20), np.uint8)
    for col, part, width in ((3, year, 4), (6, month, 2), (9, day, 2), (12, tod // 3600, 2),
                             (15, tod // 60 % 60, 2), (18, tod % 60, 2)):
        _put_digits(out, col, part, width)
    out[:, [4, 7]] = ord("-")
    out[:, 10] = ord("T")
    out[:, [13, 16]] = ord(":")
    if millis:
        out[:, 19] = ord(".")
        _put_digits(out, 22, frac, 3)
    out[:, -1] = ord("Z")
    return out


def numbers(values: np.ndarray, decimals: int) -> np.ndarray:
    """Fixed-point cells of values [rows] with `decimals` digits after the point:
    uint8 [rows, width], right-aligned, 0 = unused; NaN -> an empty cell."""
    v = np.asarray(values, np.float64)
    missing = np.isnan(v)
    scaled = np.rint(np.abs(np.where(missing, 0.0, v)) * 10.0**decimals)
    if len(v) and not scaled.max() < _MAX_SCALED:  # also catches infinities
        bad = float(v[np.argmax(scaled)])
        raise ValueError(f"cannot write {bad!r} with {decimals} decimals (too large)")
    q = scaled.astype(np.int64)
    whole, frac = np.divmod(q, 10**decimals)
    width = len(str(int(whole.max()))) if len(v) else 1
    negative = (v < 0) & (q > 0)  # no "-0.000"
    sign = int(negative.any())  # a sign column only when needed: fewer bytes to drop in lines()
    out = np.zeros((len(v), sign + width + (decimals + 1 if decimals else 0)), np.uint8)
    if sign:
        out[:, 0] = negative * np.uint8(ord("-"))  # with the leading zeros unused, it abuts the first digit
    _put_digits(out, sign + width - 1, whole, width, blank_leading=True)
    if decimals:
        out[:, sign + width] = ord(".")
        _put_digits(out, sign + width + decimals, frac, decimals)
    if missing.any():
        out[missing] = 0
    return out


def lines(cells: Sequence[np.ndarray], delimiter: str = ",") -> bytes:
    """Rows of text from cell matrices [rows, width_i] (one per column), each line ending in '\\n'."""
    rows = len(cells[0])
    out = np.empty((rows, sum(c.shape[1] for c in cells) + len(cells)), np.uint8)
    at = 0
    for c in cells:
        out[:, at:at + c.shape[1]] = c
        at += c.shape[1]
        out[:, at] = ord(delimiter)
        at += 1
    out[:, -1] = ord("\n")
    return out[out != 0].tobytes()
