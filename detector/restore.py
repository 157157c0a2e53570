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


def alerts_left_open(s: ServeSettings) -> tuple[dict[str, dict], dict[str, dict]]:
    """The last event of each asset's alert that is open on the alerts topic (opened within
    alert_lookback_seconds and not resolved), and the storms left open there (scope ->
    storm_start): a previous daemon's, to be taken up. Nothing when the topic cannot be read."""
    now_ms = int(time.time() * 1000)
    options = client_options(s.kafka, bootstrap_servers=s.bootstrap_servers, client_id="vigil-serve-restore")
    last: dict[str, dict] = {}
    storms: list[dict] = []
    try:
        for record in read_records(options, s.alerts_topic, now_ms - int(s.alert_lookback_seconds * 1000), now_ms + 1):
            try:
                event = json.loads(record.value)
                if is_storm_event(event):
                    storms.append(event)
                    continue
                last[event["asset"]] = event
            except (ValueError, KeyError, TypeError):
                continue
    except (SourceError, KafkaError) as e:
        log.info("no alerts to take up: %s", e)
        return {}, {}
    left_open = {asset: e for asset, e in last.items() if e.get("type") in ("open", "update")}
    if left_open:
        log.info("taking up %d alert(s) left open on %s", len(left_open), s.alerts_topic)
    return left_open, open_storms(storms)
