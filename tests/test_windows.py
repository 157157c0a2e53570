import numpy as np
import pytest

from detector.windows import AssetWindows


def add(w: AssetWindows, asset: str, ts: int, values) -> np.ndarray | None:
    """One reading (after the asset's newest: the pipeline checks); the window it completes, or None."""
    out = w.append([asset], np.array([ts]), np.asarray(values, np.float32)[None])
    return out.windows[0] if len(out.rows) else None


def extend(w: AssetWindows, asset: str, times: list[int], values: np.ndarray) -> np.ndarray:
    return w.append([asset] * len(times), np.array(times), values).windows


def test_window_fills_then_slides():
    w = AssetWindows(window=3, sensors=2)
    assert add(w, "a", 1, np.array([1, 1])) is None
    assert add(w, "a", 2, np.array([2, 2])) is None
    np.testing.assert_array_equal(add(w, "a", 3, np.array([3, 3])), [[1, 1], [2, 2], [3, 3]])
    for t in range(4, 9):
        window = add(w, "a", t, np.array([t, t]))
    np.testing.assert_array_equal(window[:, 0], [6, 7, 8])


def test_newest_times_per_asset():
    w = AssetWindows(3, 1)
    add(w, "a", 5, [0.0])
    add(w, "b", 4, [0.0])  # other assets are independent
    w.touch(["a"], [9])  # an off reading: not appended, but later ones must come after it
    assert w.last_times(["a", "b", "c"]).tolist() == [9, 4, -1]


def test_asset_cap_drops_the_longest_idle():
    w = AssetWindows(2, 1, max_assets=2)
    add(w, "a", 1, np.array([0.0]))
    add(w, "b", 1, np.array([0.0]))
    add(w, "a", 2, np.array([0.0]))
    add(w, "c", 1, np.array([0.0]))
    assert "b" not in w and "a" in w and "c" in w and w.evicted == 1 and len(w) == 2


def test_idle_assets():
    w = AssetWindows(2, 1)
    add(w, "a", 1, np.array([0.0]))
    assert w.idle(3600) == [] and w.idle(-1) == ["a"]


@pytest.mark.parametrize("chunks", [[1] * 9, [9], [2, 7], [4, 1, 4], [1, 1, 5, 2], [3, 3, 3]])
def test_a_batch_equals_adding_one_by_one(chunks):
    rng = np.random.default_rng(1)
    values = rng.normal(size=(9, 2)).astype(np.float32)
    one = AssetWindows(4, 2)
    expected = [w.copy() for t, v in enumerate(values) if (w := add(one, "a", t, v)) is not None]
    many = AssetWindows(4, 2)
    got, t = [], 0
    for k in chunks:
        got.extend(extend(many, "a", list(range(t, t + k)), values[t:t + k]))
        t += k
    assert len(got) == len(expected) == 6
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    # and the ring buffer continues correctly afterwards
    np.testing.assert_array_equal(add(many, "a", 9, values[0]), add(one, "a", 9, values[0]))
