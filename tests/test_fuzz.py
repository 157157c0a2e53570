"""Hostile input: generated messages never escape the decoder or the pipeline as exceptions.

Each test runs VIGIL_FUZZ_EXAMPLES generated messages (default 300 per test, so the whole
suite stays fast; scripts/fuzz runs 10,000 per test).
"""

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from detector.alerts import AlertPolicy
from detector.messages import REASONS, BadMessage, Decoder, Message
from detector.metrics import ServiceMetrics
from detector.pipeline import Pipeline, Record
from tests.test_pipeline import make_model

EXAMPLES = int(os.environ.get("VIGIL_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("VIGIL_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NOW = 1_795_460_400_000
SENSORS = ("a", "b")

numbers = st.one_of(st.integers(), st.integers(min_value=-10**400, max_value=10**400),
                    st.floats(allow_nan=True, allow_infinity=True), st.just(1e308), st.just(-0.0))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=30))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                            st.dictionaries(st.text(max_size=10), inner, max_size=5)),
                           max_leaves=20)
times = st.one_of(st.integers(min_value=-10**20, max_value=10**20), st.floats(), st.datetimes().map(str),
                  st.text(max_size=40), st.just("0001-01-01T00:00:00+14:00"), st.just("9999-12-31T23:59:59-14:00"),
                  st.just(NOW), st.none(), st.booleans(), st.lists(st.integers(), max_size=2))
values = st.one_of(st.dictionaries(st.sampled_from(SENSORS) | st.text(max_size=8), numbers | scalars, max_size=4),
                   json_values)
readings = st.fixed_dictionaries({"ts": times, "values": values})
assets = st.one_of(st.text(max_size=8), st.just("p1"), st.text(min_size=190, max_size=210), scalars)
messages = st.one_of(
    st.builds(lambda a, r: {"asset": a, **r}, assets, readings),
    st.builds(lambda a, rs: {"asset": a, "readings": rs}, assets, st.lists(readings, max_size=5) | json_values),
    json_values,
)


def encode(doc) -> bytes:
    """JSON as an attacker would send it (NaN/Infinity tokens included)."""
    return json.dumps(doc, allow_nan=True).encode()


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def check(decoder: Decoder, raw: bytes, key: bytes | None) -> None:
    try:
        message = decoder.decode(raw, key, NOW)
    except BadMessage as e:
        assert e.reason in REASONS, e.reason
        return
    assert isinstance(message, Message)
    assert message.values.shape == (len(message.times), len(SENSORS)) and message.values.dtype == np.float32
    assert np.all(np.isnan(message.values) | (np.abs(message.values) <= 1e12))


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(raw):
    check(Decoder(SENSORS), raw, None)


@pytest.mark.slow
@FUZZ
@given(messages, st.sampled_from([None, b"p1", b"\xff"]))
def test_generated_json(doc, key):
    check(Decoder(SENSORS), encode(doc), key)


near_now = st.one_of(st.integers(min_value=NOW - 10**6, max_value=NOW + 10**6), st.just(NOW + 2 * 86_400_000),
                     st.just(10**30), st.just(float(NOW)), st.just("2026-11-23T19:00:00Z"), st.booleans())
plain_values = st.dictionaries(st.sampled_from(SENSORS + ("c",)), st.one_of(
    st.none(), st.floats(-1e3, 1e3), st.integers(-10, 10), st.just(1e300), st.just(10**400), st.booleans(),
    st.just("1.5")), min_size=0, max_size=3)
plain = st.fixed_dictionaries({"asset": st.sampled_from(["p1", "p2", "", "a\nb", 7]), "ts": near_now,
                               "values": plain_values})


@pytest.mark.slow
@FUZZ
@given(st.lists(st.tuples(plain | messages, st.sampled_from([None, b"p1", b"p2"])), max_size=20))
def test_batch_decoding_equals_one_by_one(batch):
    """decode_batch takes a faster path for the common shape: it must agree with decode() on
    every record, whatever the mix."""
    decoder = Decoder(SENSORS, max_bytes=300)
    raw = [encode(doc) for doc, _ in batch]
    keys = [key for _, key in batch]
    got = decoder.decode_batch(raw, keys, NOW)
    for i, (value, key) in enumerate(zip(raw, keys)):
        mine = np.flatnonzero(got.record == i)
        try:
            expected = decoder.decode(value, key, NOW)
        except BadMessage as e:
            assert got.errors[i].reason == e.reason and not mine.size
            continue
        assert i not in got.errors and got.unknown[i] == expected.unknown_sensors
        assert [got.assets[j] for j in mine] == [expected.asset] * len(expected.times)
        assert got.times[mine].tolist() == expected.times.tolist()
        np.testing.assert_array_equal(got.values[mine], expected.values)
    assert got.values.dtype == np.float32 and got.values.shape == (len(got.times), len(SENSORS))


def test_deep_and_huge_json():
    decoder = Decoder(SENSORS, max_bytes=1 << 20)
    for raw in (deep(100_000), b'{"asset": "p1", "ts": 1, "values": ' + deep(50_000) + b"}",
                b'{"asset": "p1", "ts": ' + b"9" * 5000 + b', "values": {}}',
                b'{"asset": "p1", "ts": 1795460400000, "values": {"a": 1' + b"0" * 400 + b"}}",
                b'{"asset": "p1", "ts": 1795460400000, "values": {"a": 1e999}}',
                b'{"asset": "p1", "readings": [' + b",".join([b'{"ts": 1795460400000, "values": {}}'] * 20_000) + b"]}",
                b" " * (2 << 20)):
        check(decoder, raw, None)


_PIPELINE = []


def shared_pipeline() -> tuple[Pipeline, CollectorRegistry]:
    """One pipeline for all examples (building one compiles the scorer)."""
    if not _PIPELINE:
        registry = CollectorRegistry()
        _PIPELINE.append((Pipeline(make_model(), ServiceMetrics(registry), AlertPolicy(), max_assets=5), registry))
    return _PIPELINE[0]


@pytest.mark.slow
@settings(FUZZ, max_examples=max(EXAMPLES // 3, 20))
@given(st.lists(st.tuples(messages, st.sampled_from([None, b"p1", b"p2"])), min_size=1, max_size=30))
def test_pipeline_scores_or_dead_letters_every_record(batch):
    pipeline, registry = shared_pipeline()

    def count(name):
        return registry.get_sample_value(name)

    before = {n: count(n) for n in ("vigil_messages_consumed_total", "vigil_readings_consumed_total",
                                    "vigil_readings_scored_total")}
    records = [Record("t", 0, i, key, encode(doc), NOW) for i, (doc, key) in enumerate(batch)]
    result = pipeline.process(records, now_ms=NOW)
    after = {n: count(n) - before[n] for n in before}
    assert after["vigil_messages_consumed_total"] == len(records)
    dead = [d.record.offset for d in result.dead_letters]
    assert len(set(dead)) == len(dead) and all(d.reason in REASONS for d in result.dead_letters)
    assert after["vigil_readings_scored_total"] <= after["vigil_readings_consumed_total"]
    assert result.offsets == {("t", 0): len(records)}
    assert len(pipeline.windows) <= 5  # the asset cap holds whatever the ids
