"""When a machine is switched off: a model's off condition.

A pump that is stopped reads near-zero current, flow and vibration. A model may carry an
off condition (`off_condition = "motor_current < 0.5"` in the training TOML, or
`vigil train --off-condition`), in the spirit of AWS Lookout for Equipment's OffCondition:

- comparisons of a sensor with a number, `<`, `<=`, `>` or `>=`, joined by `and` or by `or`
  (one kind in one condition); a sensor name with spaces or symbols is quoted: "Flow rate" < 1;
- a reading is off when the condition holds for it; a missing value makes its comparison
  false (a reading that does not say it is off is not off);
- a machine settles after it is switched on (pumps ramp up, pressure builds): readings less
  than `settle_seconds` (`off_settle_seconds`, default SETTLE_SECONDS) after an off reading
  count as off too;
- an off reading is left out as if it had not come: training does not learn from it, and on
  the time grid (detector.grid) a stop is a gap, so a window that is mostly off is not scored
  and a stop longer than a window restarts it. The same rule in training, `vigil score` and
  the daemon (OffState, reading by reading; `off_rows` for a whole series: a test checks they
  agree). The daemon also resolves an asset's open alert when it is switched off, holds back
  an alert for settle_seconds (at most HOLD_SECONDS) of reading time in case the machine is
  being switched off
  (a stop's ramp-down is not a fault: AlertTracker's hold), and counts the assets that are
  off (`vigil_assets_off`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SETTLE_SECONDS = 60.0
HOLD_SECONDS = 60.0  # an alert is held back for the settle time, at most this long
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_CLAUSE = re.compile(r"""\s*(?:"(?P<dq>[^"]+)"|'(?P<sq>[^']+)'|`(?P<bq>[^`]+)`|(?P<bare>[A-Za-z_][\w.\-/]*))\s*
                         (?P<op><=|>=|<|>)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*""", re.X)
_JOIN = re.compile(r"\s+(and|or)\s+", re.I)


class ConditionError(ValueError):
    """An off condition that cannot be read or names a sensor the model does not have."""


@dataclass(frozen=True)
class OffCondition:
    """text: as written; clauses: (sensor index, operator, value); join: "and" or "or";
    settle_seconds: readings this soon after an off one count as off."""

    text: str
    clauses: tuple[tuple[int, str, float], ...]
    join: str = "and"
    settle_seconds: float = SETTLE_SECONDS

    @property
    def settle_ms(self) -> float:
        return self.settle_seconds * 1000.0

    @property
    def hold_ms(self) -> float:
        """How long an alert waits in case the machine is being switched off: the settle time,
        at most HOLD_SECONDS (a stop's ramp-down takes seconds; a warm-up may take minutes)."""
        return min(self.settle_seconds, HOLD_SECONDS) * 1000.0

    @classmethod
    def parse(cls, text: str, sensors: Sequence[str], settle_seconds: float = SETTLE_SECONDS) -> OffCondition:
        """Read a condition over `sensors`; ConditionError names what is wrong."""
        if not isinstance(text, str) or not text.strip():
            raise ConditionError("an off condition is a comparison such as \"motor_current < 0.5\", got nothing")
        parts = _JOIN.split(text.strip())
        clauses, joins = parts[0::2], {j.lower() for j in parts[1::2]}
        if len(joins) > 1:
            raise ConditionError(f"off condition {text!r}: use either 'and' or 'or', not both")
        index = {name: i for i, name in enumerate(sensors)}
        out = []
        for clause in clauses:
            m = _CLAUSE.fullmatch(clause)
            if m is None:
                raise ConditionError(f"off condition {text!r}: cannot read {clause.strip()!r}; write SENSOR OP NUMBER "
                                     f"with OP one of <, <=, >, >= (quote a name with spaces: \"Flow rate\" < 1)")
            name = m["dq"] or m["sq"] or m["bq"] or m["bare"]
            if name not in index:
                raise ConditionError(f"off condition {text!r}: no sensor {name!r} (the model's sensors: "
                                     f"{', '.join(sensors)})")
            out.append((index[name], m["op"], float(m["value"])))
        if not 0 <= settle_seconds < float("inf"):
            raise ConditionError(f"off_settle_seconds must be a number of seconds >= 0, got {settle_seconds!r}")
        return cls(text.strip(), tuple(out), joins.pop() if joins else "and", float(settle_seconds))

    def holds(self, values: np.ndarray) -> np.ndarray:
        """[rows] bool: the condition holds for each reading of values [rows, sensors] (the
        model's sensor order; NaN = missing makes a comparison false)."""
        values = np.asarray(values)
        result = None
        with np.errstate(invalid="ignore"):
            for i, op, value in self.clauses:
                hit = _OPS[op](values[:, i], value)
                result = hit if result is None else (result & hit if self.join == "and" else result | hit)
        return result if result is not None else np.zeros(len(values), bool)

    def off_rows(self, times_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
        """[rows] bool: the readings of one series (times increasing) that count as off: the
        condition holds, or the last reading it held for is less than settle_seconds before."""
        off = self.holds(values)
        if not off.any():
            return off
        t = np.asarray(times_ms, np.float64)
        last = np.maximum.accumulate(np.where(off, t, -np.inf))
        return off | (t - last < self.settle_ms)


class OffState:
    """Which readings count as off, asset by asset, as they come (the daemon's off_rows): it
    remembers each asset's last off reading while the asset may still be settling."""

    def __init__(self, condition: OffCondition):
        self.condition = condition
        self._last_off: dict[str, int] = {}  # asset -> time (ms) of its last off reading, while settling

    def mask(self, assets: Sequence[str], times: np.ndarray, values: np.ndarray) -> np.ndarray:
        """[readings] bool, for readings in time order per asset."""
        off = self.condition.holds(values)
        if not self._last_off and not off.any():  # the usual case: everything runs
            return off
        settle, last, out = self.condition.settle_ms, self._last_off, off.copy()
        for i, (asset, is_off, t) in enumerate(zip(assets, off.tolist(), np.asarray(times).tolist())):
            if is_off:
                last[asset] = t
            elif asset in last:
                if t - last[asset] < settle:
                    out[i] = True
                else:
                    del last[asset]
        return out

    def forget(self, asset: str) -> None:
        self._last_off.pop(asset, None)
