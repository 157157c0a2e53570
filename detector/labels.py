"""Operator labels: an operator's verdict on an alert, on the labels topic (default
`vigil.labels`, keyed by alert id; JSON Schema: deploy/schemas/label.schema.json):

    {"alert_id": "5f1c0e8a9b7d2c41", "label": "false_alarm", "by": "j.doe", "note": "new impeller",
     "asset": "pump-1", "model": "", "time": "2026-11-23T21:00:00.000Z"}

label: "confirmed" (a real fault), "false_alarm" (the machine was normal) or "maintenance"
(work on the machine, neither). asset and model (the route) are filled in by `vigil label`
from the alert's events when it finds them. The last label of an alert counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson

from detector.messages import BadMessage

LABELS = ("confirmed", "false_alarm", "maintenance")  # also vigil_alert_labels_total's label values
MAX_NOTE = 2000


@dataclass(frozen=True)
class Label:
    alert_id: str
    label: str
    by: str = ""
    note: str = ""
    asset: str = ""
    model: str = ""
    time: str = ""

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))


def parse_label(value: bytes | None) -> Label:
    """A labels-topic record's value -> Label; BadMessage (a dead-letter reason) when it is not one."""
    try:
        doc = orjson.loads(value)
    except (orjson.JSONDecodeError, TypeError):
        raise BadMessage("invalid_json", "not JSON") from None
    if not isinstance(doc, dict):
        raise BadMessage("not_an_object", "a label is a JSON object")
    alert_id, label = doc.get("alert_id"), doc.get("label")
    if not isinstance(alert_id, str) or not alert_id.strip():
        raise BadMessage("bad_label", "alert_id: a non-empty string is required")
    if label not in LABELS:
        raise BadMessage("bad_label", f"label: one of {', '.join(LABELS)}, got {label!r}")
    fields = {}
    for name in ("by", "note", "asset", "model", "time"):
        v = doc.get(name, "")
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise BadMessage("bad_label", f"{name}: a string, got {v!r}")
        fields[name] = v[:MAX_NOTE]
    return Label(alert_id.strip(), label, **fields)


def latest_labels(records) -> dict[str, Label]:
    """alert id -> its last label, from labels-topic records in order (invalid ones skipped)."""
    out = {}
    for record in records:
        try:
            label = parse_label(record.value)
        except BadMessage:
            continue
        out[label.alert_id] = label
    return out
