"""When a machine is switched off: a model's off condition.

A pump that is stopped reads near-zero current, flow and vibration. A model may carry an
off condition (`off_condition = "motor_current < 0.5"` in the training TOML, or
`vigil train --off-condition`), in the spirit of AWS Lookout for Equipment's OffCondition:

- comparisons of a sensor with a number, `<`, `<=`, `>` or `>=`, joined by `and` or by `or`
  (one kind in one condition); a sensor name with spaces or symbols is quoted: "Flow rate" < 1;
- a reading is off when the condition holds for it; a missing value makes its comparison
  false (a reading that does not say it is off is not off);
- an off reading is left out as if it had not come: training does not learn from it, and on
  the time grid (detector.grid) a stop is a gap, so a window that is mostly off is not scored
  and a stop longer than a window restarts it. The same rule in training, `vigil score` and
  the daemon, which also resolves an asset's open alert when it is switched off and counts
  the assets that are off (`vigil_assets_off`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_CLAUSE = re.compile(r"""\s*(?:"(?P<dq>[^"]+)"|'(?P<sq>[^']+)'|`(?P<bq>[^`]+)`|(?P<bare>[A-Za-z_][\w.\-/]*))\s*
                         (?P<op><=|>=|<|>)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*""", re.X)
_JOIN = re.compile(r"\s+(and|or)\s+", re.I)


class ConditionError(ValueError):
    """An off condition that cannot be read or names a sensor the model does not have."""


@dataclass(frozen=True)
class OffCondition:
    """text: as written; clauses: (sensor index, operator, value); join: "and" or "or"."""

    text: str
    clauses: tuple[tuple[int, str, float], ...]
    join: str = "and"

    @classmethod
    def parse(cls, text: str, sensors: Sequence[str]) -> OffCondition:
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
        return cls(text.strip(), tuple(out), joins.pop() if joins else "and")

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
