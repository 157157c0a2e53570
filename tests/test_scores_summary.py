"""detector.offline.ScoresSummary: what `vigil score` says of the file it wrote."""

import numpy as np

from detector.offline import ScoresSummary, TableScores


def chunk(flags, leader=None, sensors=3):
    flags = np.asarray(flags, bool)
    score = np.where(np.arange(len(flags)) < 1, np.nan, 1.0).astype(np.float32)  # the first row not scored
    contributions = np.zeros((len(flags), sensors), np.float32)
    contributions[:, 0] = 0.1
    if leader is not None:
        contributions[flags, leader] = 1.0
    return TableScores(score, score, flags, contributions)


def test_stretches_are_counted_across_chunks_and_restart_with_each_file():
    s = ScoresSummary(("a", "b", "c"))
    s.start_file()
    s.add(chunk([0, 1, 1, 0, 1], leader=1))  # two stretches, the second runs on into the next chunk
    s.add(chunk([1, 1, 0, 0, 0], leader=2))
    s.start_file()
    s.add(chunk([0, 0, 0, 0, 0]))
    s.start_file()
    s.add(chunk([1, 0, 0, 0, 0], leader=2))  # a new file: a new stretch even after a flagged row
    assert (s.files, s.flagged, s.stretches, s.files_flagged, s.scored) == (3, 6, 3, 2, 16)
    assert s.led == {"b": 2, "c": 1}
    assert s.describe() == "6 rows flagged (37.50% of 16 scored) in 3 stretches, in 2 of 3 files; led by b (2), c (1)"


def test_nothing_flagged():
    s = ScoresSummary(("a",))
    s.start_file()
    s.add(chunk([0, 0, 0], sensors=1))
    assert s.describe() == "no row flagged (of 2 scored)"
