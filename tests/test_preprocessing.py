import numpy as np
import pytest

from detector.preprocessing import Scaler, windows


def test_scaler_ignores_missing_values():
    values = np.array([[1.0, 10.0], [np.nan, 20.0], [3.0, np.nan], [5.0, 30.0]])
    s = Scaler.fit(values)
    np.testing.assert_allclose(s.center, [3.0, 20.0])
    np.testing.assert_allclose(s.scale, [np.std([1, 3, 5]), np.std([10, 20, 30])], rtol=1e-6)


def test_scaler_floors_constant_sensor():
    values = np.array([[100.0, 1.0], [100.0, 2.0], [100.0, 3.0]])
    s = Scaler.fit(values)
    assert s.scale[0] == pytest.approx(0.1)  # 1e-3 of |mean|


def test_scaler_needs_observations():
    with pytest.raises(ValueError, match=r"sensors \[1\]"):
        Scaler.fit(np.array([[1.0, np.nan], [2.0, np.nan]]))


def test_scaler_round_trip():
    s = Scaler(np.array([1.5, -2.0], np.float32), np.array([0.5, 3.0], np.float32))
    t = Scaler.from_dict(s.to_dict())
    np.testing.assert_array_equal(s.center, t.center)
    np.testing.assert_array_equal(s.scale, t.scale)


def test_windows_are_sliding_views():
    values = np.arange(10, dtype=np.float32).reshape(5, 2)
    w = windows(values, 3)
    assert w.shape == (3, 3, 2)
    np.testing.assert_array_equal(w[1], values[1:4])
    assert windows(values, 6).shape == (0, 6, 2)
