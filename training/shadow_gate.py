"""Comparing a shadow model with the current one on the live stream, and the shadow gate.

The daemon scores a registry's shadow version beside its current one (detector.shadow):
the current model's alert events are on the alerts topic, the shadow's on the shadow alerts
topic. `compare` counts, over the shadow period, each model's alert episodes (opens) and the
assets they alerted on, and how far they agree. The gate (`vigil retrain --shadow-hours N`)
promotes a shadow once it has run N hours, only if it opened no more alert episodes than the
current model over that time; otherwise the shadow is dropped.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable

from detector.routes import Router, asset_filter
from detector.storm import is_storm_event


def alert_opens(records: Iterable, assets: Router | None = None) -> list[dict]:
    """The `open` events among alert-topic records (storm events and unreadable records skipped),
    of the assets `assets` matches."""
    out = []
    for record in records:
        try:
            event = json.loads(record.value)
        except (ValueError, TypeError):
            continue
        if not isinstance(event, dict) or is_storm_event(event) or event.get("type") != "open":
            continue
        asset = event.get("asset")
        if not isinstance(asset, str) or (assets is not None and assets(asset) is None):
            continue
        out.append(event)
    return out


def compare(current: list[dict], shadow: list[dict]) -> dict:
    """Alert episodes and assets of each model, and the assets both / only one alerted on."""
    ours, theirs = Counter(e["asset"] for e in current), Counter(e["asset"] for e in shadow)
    return {"current": {"alert_episodes": len(current), "assets": sorted(ours)},
            "shadow": {"alert_episodes": len(shadow), "assets": sorted(theirs)},
            "both": sorted(set(ours) & set(theirs)), "current_only": sorted(set(ours) - set(theirs)),
            "shadow_only": sorted(set(theirs) - set(ours))}


def decide(comparison: dict, hours_run: float, min_hours: float) -> list[str]:
    """Why the shadow may not be promoted yet ([] = promote): too short a period, or more alert
    episodes than the current model over it."""
    reasons = []
    if hours_run < min_hours:
        reasons.append(f"the shadow has run {hours_run:.1f} h of the {min_hours:g} h required")
    c, s = comparison["current"]["alert_episodes"], comparison["shadow"]["alert_episodes"]
    if s > c:
        reasons.append(f"the shadow opened {s} alert episode(s) on the live stream, the current model {c}")
    return reasons


def read_opens(options: dict, alerts_topic: str, shadow_topic: str, since_ms: int, until_ms: int,
               assets: tuple[str, ...] = (), say: Callable[[str], None] = lambda _m: None
               ) -> tuple[list[dict], list[dict]]:
    """The current model's and the shadow's alert opens between since_ms and until_ms (Kafka time:
    the shadow period, so the shadow topic's events are this shadow's)."""
    from detector.topics import MissingTopic, read_records

    only = asset_filter(assets) if assets else None

    def opens(topic: str) -> list[dict]:
        try:
            return alert_opens(read_records(options, topic, since_ms, until_ms), only)
        except MissingTopic as e:  # Kafka makes a topic on its first event: none yet is no alert yet
            say(f"{e}: no alert on it yet")
            return []

    return opens(alerts_topic), opens(shadow_topic)


def describe(comparison: dict, shadow_version: str, hours: float) -> list[str]:
    """The comparison as lines of text."""
    c, s = comparison["current"], comparison["shadow"]

    def names(assets: list[str]) -> str:
        return ", ".join(assets[:5]) + (f" and {len(assets) - 5} more" if len(assets) > 5 else "") if assets else "-"

    return [f"shadow {shadow_version}, {hours:.1f} h on the live stream",
            f"{'':<18}{'current':>10}{'shadow':>10}",
            f"{'alert episodes':<18}{c['alert_episodes']:>10}{s['alert_episodes']:>10}",
            f"{'assets alerting':<18}{len(c['assets']):>10}{len(s['assets']):>10}",
            f"both: {names(comparison['both'])}; current only: {names(comparison['current_only'])}; "
            f"shadow only: {names(comparison['shadow_only'])}"]
