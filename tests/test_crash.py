"""Crash and restart (short version of scripts/soak): `vigil serve` killed with SIGKILL at
random moments while readings stream in; nothing is lost, duplicates keep their ids."""

import pytest

from tests.kafka_util import BOOTSTRAP, broker_reachable
from tests.soak import run_soak
from tests.test_serve_kafka import model  # noqa: F401 (fixture)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_sigkill_and_restart_loses_no_reading_and_no_alert(model, tmp_path):  # noqa: F811
    if not broker_reachable():
        pytest.fail(f"no Kafka broker at {BOOTSTRAP}: run deploy/kafka/broker start (scripts/test does)")
    r = run_soak(model, tmp_path, assets=10, per_asset=400, kills=3, rate=70, seed=1, say=print)
    print(r.summary())
    assert r.kills == 3 and r.committed == r.end
    assert r.missing_scores == 0, r.summary()
    assert r.reference_alerts, "the data should raise alerts"
    assert r.alerts_opened == r.reference_alerts, r.summary()  # none lost, none opened twice under new ids
    assert r.reference_resolved <= r.alerts_resolved, r.summary()
