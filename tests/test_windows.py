import numpy as np
import pytest

from detector.messages import BadMessage
from detector.windows import AssetWindows


def test_window_fills_then_slides():
    w = AssetWindows(window=3, sensors=2)
    assert w.add("a", 1, np.array([1, 1])) is None
    assert w.add("a", 2, np.array([2, 2])) is None
    np.testing.assert_array_equal(w.add("a", 3, np.array([3, 3])), [[1, 1], [2, 2], [3, 3]])
    for t in range(4, 9):
        window = w.add("a", t, np.array([t, t]))
    np.testing.assert_array_equal(window[:, 0], [6, 7, 8])


@pytest.mark.parametrize("ts, reason", [(5, "duplicate_time"), (4, "out_of_order")])
def test_time_must_advance(ts, reason):
    w = AssetWindows(3, 1)
    w.add("a", 5, np.array([0.0]))
    with pytest.raises(BadMessage) as info:
        w.add("a", ts, np.array([0.0]))
    assert info.value.reason == reason
    w.add("b", 4, np.array([0.0]))  # other assets are independent


def test_asset_cap_drops_the_longest_idle():
    w = AssetWindows(2, 1, max_assets=2)
    w.add("a", 1, np.array([0.0]))
    w.add("b", 1, np.array([0.0]))
    w.add("a", 2, np.array([0.0]))
    w.add("c", 1, np.array([0.0]))
    assert "b" not in w and "a" in w and "c" in w and w.evicted == 1 and len(w) == 2


def test_idle_assets():
    w = AssetWindows(2, 1)
    w.add("a", 1, np.array([0.0]))
    assert w.idle(3600) == [] and w.idle(-1) == ["a"]


@pytest.mark.parametrize("chunks", [[1] * 9, [9], [2, 7], [4, 1, 4], [1, 1, 5, 2], [3, 3, 3]])
def test_extend_equals_adding_one_by_one(chunks):
    rng = np.random.default_rng(1)
    values = rng.normal(size=(9, 2)).astype(np.float32)
    one = AssetWindows(4, 2)
    expected = [w.copy() for t, v in enumerate(values) if (w := one.add("a", t, v)) is not None]
    many = AssetWindows(4, 2)
    got, t = [], 0
    for k in chunks:
        got.extend(many.extend("a", list(range(t, t + k)), values[t:t + k]))
        t += k
    assert len(got) == len(expected) == 6
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    # and the ring buffer continues correctly afterwards
    np.testing.assert_array_equal(many.add("a", 9, values[0]), one.add("a", 9, values[0]))
