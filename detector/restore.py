"""Taking up what a previous daemon left open: its open alerts and alert storms, read back
from the alerts topic at start-up."""

from __future__ import annotations

import json
import logging
import time

from kafka.errors import KafkaError

from detector.kafka_client import client_options
from detector.settings import ServeSettings
from detector.storm import is_storm_event, open_storms
from detector.topics import SourceError, read_records

log = logging.getLogger("vigil.serve")


def alerts_left_open(s: ServeSettings, topic: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """What a previous daemon left open on an alerts topic (the alerts topic, or the shadow
    alerts topic for the shadows), from its events of the last alert_lookback_seconds (see
    left_open). Nothing when the topic cannot be read."""
    now_ms = int(time.time() * 1000)
    options = client_options(s.kafka, bootstrap_servers=s.bootstrap_servers, client_id="vigil-serve-restore")
    events = []
    try:
        for record in read_records(options, topic, now_ms - int(s.alert_lookback_seconds * 1000), now_ms + 1):
            try:
                events.append(json.loads(record.value))
            except ValueError:
                continue
    except (SourceError, KafkaError) as e:
        log.info("no alerts to take up from %s: %s", topic, e)
        return {}, {}
    alerts, storms = left_open(events)
    if alerts:
        log.info("taking up %d alert(s) left open on %s", len(alerts), topic)
    return alerts, storms


def left_open(events: list) -> tuple[dict[str, dict], dict[str, dict]]:
    """Of alert and storm events in the order they were written: the last event of each asset's
    alert that is still open (asset -> its open or update event), and the storms left open
    (scope -> storm_start). Events that are not objects with an asset are passed over."""
    last: dict[str, dict] = {}
    storms: list[dict] = []
    for event in events:
        if not isinstance(event, dict):
            continue
        if is_storm_event(event):
            storms.append(event)
        elif isinstance(event.get("asset"), str):
            last[event["asset"]] = event
    alerts = {asset: e for asset, e in last.items() if e.get("type") in ("open", "update")}
    return alerts, open_storms(storms)
