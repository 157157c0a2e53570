"""Durations on the command line: `90s`, `30m`, `2h`, `7d`, `1w` (or a plain number of seconds)."""

from __future__ import annotations

import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")


def parse_duration(text: str) -> float:
    """Seconds in a duration like 90s, 30m, 2h, 7d, 1w or 1.5h; ValueError with the rule otherwise."""
    match = _PATTERN.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r} (use a number with s, m, h, d or w, e.g. 30m or 7d)")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]
