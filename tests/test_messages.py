import json

import numpy as np
import pytest

from detector.messages import BadMessage, Decoder

NOW = 1_795_460_400_000  # 2026-11-23T...Z in ms
SENSORS = ("flow", "pressure", "temp")


@pytest.fixture
def decoder():
    return Decoder(SENSORS, max_bytes=10_000)


def enc(doc) -> bytes:
    return json.dumps(doc).encode()


def test_single_reading_by_name_with_missing_and_unknown(decoder):
    m = decoder.decode(enc({"asset": "p1", "ts": "2026-11-23T19:00:00.123Z",
                            "values": {"temp": 40.5, "flow": None, "speed": 3}}), b"p1", NOW)
    assert m.asset == "p1" and m.unknown_sensors == 1
    assert m.times.tolist() == [1795460400123]
    assert np.isnan(m.values[0, 0]) and np.isnan(m.values[0, 1]) and m.values[0, 2] == pytest.approx(40.5)


def test_batch_and_epoch_ms(decoder):
    m = decoder.decode(enc({"asset": "p1", "readings": [{"ts": NOW, "values": {"flow": 1}},
                                                         {"ts": NOW + 1000, "values": {"flow": 2}}]}), None, NOW)
    assert m.times.tolist() == [NOW, NOW + 1000] and m.values[:, 0].tolist() == [1.0, 2.0]


def test_naive_iso_is_utc(decoder):
    m = decoder.decode(enc({"asset": "a", "ts": "2026-11-23 19:00:00", "values": {}}), None, NOW)
    assert m.times[0] == 1795460400000


@pytest.mark.parametrize("value, reason", [
    (b"not json", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b"[" * 100000 + b"]" * 100000, "oversized"),
    (b"[" * 5000 + b"]" * 5000, "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (enc({"ts": NOW, "values": {}}), "missing_asset"),
    (enc({"asset": 7, "ts": NOW, "values": {}}), "bad_asset"),
    (enc({"asset": "", "ts": NOW, "values": {}}), "bad_asset"),
    (enc({"asset": "a\nb", "ts": NOW, "values": {}}), "bad_asset"),
    (enc({"asset": "p1", "values": {}}), "missing_time"),
    (enc({"asset": "p1", "ts": "yesterday", "values": {}}), "bad_time"),
    (enc({"asset": "p1", "ts": True, "values": {}}), "bad_time"),
    (enc({"asset": "p1", "ts": 12, "values": {}}), "time_out_of_range"),
    (enc({"asset": "p1", "ts": NOW + 3 * 86400_000, "values": {}}), "time_out_of_range"),
    (enc({"asset": "p1", "ts": NOW}), "bad_values"),
    (enc({"asset": "p1", "ts": NOW, "values": [1, 2]}), "bad_values"),
    (enc({"asset": "p1", "ts": NOW, "values": {"flow": "high"}}), "bad_value_type"),
    (enc({"asset": "p1", "ts": NOW, "values": {"flow": True}}), "bad_value_type"),
    (b'{"asset": "p1", "ts": 1795460400000, "values": {"flow": NaN}}', "non_finite"),
    (b'{"asset": "p1", "ts": 1795460400000, "values": {"flow": Infinity}}', "non_finite"),
    (b'{"asset": "p1", "ts": 1795460400000, "values": {"flow": 1e400}}', "non_finite"),
    (enc({"asset": "p1", "ts": NOW, "values": {"flow": 1e300}}), "absurd_magnitude"),
    (enc({"asset": "p1", "ts": NOW, "values": {"flow": 10 ** 400}}), "absurd_magnitude"),
    (enc({"asset": "p1", "readings": []}), "bad_batch"),
    (enc({"asset": "p1", "readings": [3]}), "bad_batch"),
    (enc({"asset": "p1", "readings": {"ts": NOW}}), "bad_batch"),
])
def test_bad_messages_have_a_reason(decoder, value, reason):
    with pytest.raises(BadMessage) as info:
        decoder.decode(value, None, NOW)
    assert info.value.reason == reason


def test_key_must_match_asset(decoder):
    with pytest.raises(BadMessage) as info:
        decoder.decode(enc({"asset": "p1", "ts": NOW, "values": {}}), b"p2", NOW)
    assert info.value.reason == "asset_key_mismatch"


def test_tombstone(decoder):
    with pytest.raises(BadMessage, match="tombstone"):
        decoder.decode(None, b"p1", NOW)
