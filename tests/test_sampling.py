import numpy as np
import pytest

from detector.sampling import Sampling, duration, infer_sampling


def test_interval_is_the_median_spacing_despite_jitter_and_gaps():
    rng = np.random.default_rng(0)
    spacing = 5.0 + rng.uniform(-0.2, 0.2, size=999)  # a 5 s logger with +-4 % jitter
    spacing[500] = 7200.0                              # and one two-hour gateway outage
    times = np.cumsum(np.r_[1_700_000_000.0, spacing])
    s = infer_sampling([times])
    assert s.interval_seconds == pytest.approx(5.0, abs=0.05)
    assert (s.spacings, s.gaps, s.longest_seconds) == (999, 1, 7200.0)
    assert s.jittered == 0.0  # within 10 %
    assert s.describe().endswith(" s (median of 999 spacings; 1 gap, the longest 2 h)")


def test_spacings_are_taken_per_file_never_across_files():
    a = np.arange(0.0, 600.0, 60.0)            # 1-minute readings
    b = np.arange(1e6, 1e6 + 600.0, 60.0)      # a later file: the jump between files is no gap
    s = infer_sampling([a, b, np.array([5.0])])
    assert (s.interval_seconds, s.spacings, s.gaps) == (60.0, 18, 0)


def test_jittered_share():
    times = np.cumsum(np.r_[0.0, np.tile([1.0, 1.0, 1.3, 0.8], 25)])  # half the spacings 20-30 % off
    s = infer_sampling([times])
    assert s.interval_seconds == 1.0 and s.jittered == pytest.approx(0.5) and s.gaps == 0


def test_too_few_readings():
    s = infer_sampling([np.array([1.0]), np.array([])])
    assert s == Sampling(None) and "unknown" in s.describe()


@pytest.mark.parametrize(("seconds", "text"), [
    (0.25, "250 ms"), (1.0, "1 s"), (2.5, "2.5 s"), (300.0, "5 min"), (5400.0, "1.5 h"), (172800.0, "2 d"),
])
def test_duration(seconds, text):
    assert duration(seconds) == text
