"""The JSON Schemas in deploy/schemas agree with what the decoder and the alert tracker do."""

import json
from pathlib import Path

import jsonschema
import pytest

from detector.alerts import AlertPolicy, AlertTracker
from detector.messages import BadMessage, Decoder

SCHEMAS = Path(__file__).resolve().parents[1] / "deploy" / "schemas"
NOW = 1_795_460_400_000


def schema(name):
    return json.loads((SCHEMAS / name).read_text())


@pytest.mark.parametrize("doc", [
    {"asset": "pump-7", "ts": "2026-11-23T19:00:00.123Z", "values": {"flow": 1.5, "pressure": None}},
    {"asset": "pump-7", "ts": NOW, "values": {}},
    {"asset": "pump-7", "readings": [{"ts": NOW, "values": {"flow": 1}}, {"ts": NOW + 1000, "values": {"flow": 2}}]},
])
def test_valid_examples_pass_both(doc):
    jsonschema.validate(doc, schema("reading.schema.json"))
    Decoder(("flow", "pressure")).decode(json.dumps(doc).encode(), None, NOW)


@pytest.mark.parametrize("doc", [
    {"ts": NOW, "values": {}},
    {"asset": "", "ts": NOW, "values": {}},
    {"asset": "p", "values": {}},
    {"asset": "p", "ts": NOW, "values": {"flow": "x"}},
    {"asset": "p", "ts": NOW, "values": {"flow": 1e300}},
    {"asset": "p", "readings": []},
    {"asset": "p", "ts": 5, "values": {}},
])
def test_invalid_examples_fail_both(doc):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema("reading.schema.json"))
    with pytest.raises(BadMessage):
        Decoder(("flow",)).decode(json.dumps(doc).encode(), None, NOW)


def test_alert_events_match_the_schema():
    tracker = AlertTracker(AlertPolicy(k=1, n=1, resolve_after=1, update_seconds=0, update_heartbeat_seconds=0),
                           2.0, "v1")
    events = [tracker.observe("p1", NOW + i * 1000, 5.0 * v, v, lambda: [("flow", 0.7), ("temp", 0.3)]) for i, v in
              enumerate([2.0, 2.5, 0.1])]
    assert [e.type for e in events] == ["open", "update", "resolve"]
    for e in events:
        jsonschema.validate(e.to_json_dict(), schema("alert.schema.json"))


def storm_events() -> list[dict]:
    from detector.storm import StormPolicy, StormTracker
    tracker = StormTracker(StormPolicy(min_assets=1))
    tracker.set_assets(4)
    opened = [tracker.opened(f"p{i}", NOW + i * 1000) for i in range(2)]
    resolved = [tracker.resolved(f"p{i}", NOW + 60_000 + i) for i in range(2)]
    return [e.to_json_dict() for e in opened + resolved if e is not None]


def test_storm_events_match_the_storm_schema_and_not_the_alert_schema():
    """The alerts topic carries both kinds; each schema accepts its own kind only (told apart by type)."""
    events = storm_events()
    assert [e["type"] for e in events] == ["storm_start", "storm_end"]
    for e in events:
        jsonschema.validate(e, schema("storm.schema.json"))
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(e, schema("alert.schema.json"))
    tracker = AlertTracker(AlertPolicy(k=1, n=1), 2.0, "v1")
    alert = tracker.observe("p1", NOW, 5.0, 2.5, lambda: [("flow", 1.0)]).to_json_dict()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(alert, schema("storm.schema.json"))


@pytest.mark.parametrize("change", [{"type": "storm"}, {"share": 1.5}, {"assets": -1}, {"storm_id": ""},
                                    {"first_assets": [f"p{i}" for i in range(11)]}, {"extra": 1}])
def test_invalid_storm_events_fail(change):
    event = {**storm_events()[0], **change}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(event, schema("storm.schema.json"))


@pytest.mark.parametrize("doc, valid", [
    ({"alert_id": "a1", "label": "false_alarm", "by": "jo", "note": "", "asset": "pump-1", "model": "",
      "time": "2026-11-23T21:00:00.000Z"}, True),
    ({"alert_id": "a1", "label": "confirmed"}, True),
    ({"alert_id": "a1", "label": "fixed"}, False),
    ({"label": "confirmed"}, False),
    ({"alert_id": "a1", "label": "confirmed", "by": 7}, False),
    ({"alert_id": "a1", "label": "confirmed", "colour": "red"}, False),
])
def test_labels_agree_with_the_label_schema(doc, valid):
    """What vigil label writes passes the schema; what parse_label refuses fails it."""
    import json

    from detector.labels import Label, parse_label
    from detector.messages import BadMessage
    if valid:
        jsonschema.validate(doc, schema("label.schema.json"))
        label = parse_label(json.dumps(doc).encode())
        jsonschema.validate(json.loads(Label(**{**doc, **vars(label)}).to_json()), schema("label.schema.json"))
        return
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema("label.schema.json"))
    if "colour" not in doc:  # the reader ignores unknown keys; the schema is stricter about what is written
        with pytest.raises(BadMessage):
            parse_label(json.dumps(doc).encode())
