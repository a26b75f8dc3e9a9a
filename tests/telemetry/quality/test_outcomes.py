"""Window metrics: exact accuracy and per-class metrics; subject hashing."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.telemetry.quality.outcomes import WindowMetrics, subject_hash


def test_scripted_sequence_gives_exact_accuracy_and_per_class_metrics() -> None:
    # (true, predicted): 0→0 ×3, 0→1 ×1, 1→1 ×2, 1→2 ×1, 2→2 ×1, 2→0 ×2
    pairs = [(0, 0)] * 3 + [(0, 1)] + [(1, 1)] * 2 + [(1, 2)] + [(2, 2)] + [(2, 0)] * 2
    confusion = np.zeros((3, 3), np.int64)
    for t, p in pairs:
        confusion[t, p] += 1
    recent = WindowMetrics(confusion)
    assert recent.rows == 10
    assert recent.accuracy == pytest.approx(6 / 10)
    assert recent.confusion.tolist() == [[3, 1, 0], [0, 2, 1], [2, 0, 1]]
    (p0, r0, f0, s0), (p1, r1, f1, s1), (p2, r2, f2, s2) = recent.per_class()
    assert (p0, r0, s0) == (pytest.approx(3 / 5), pytest.approx(3 / 4), 4)
    assert f0 == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    assert (p1, r1, s1) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3) and f1 == pytest.approx(2 / 3)
    assert (p2, r2, s2) == (pytest.approx(1 / 2), pytest.approx(1 / 3), 3) and f2 == pytest.approx(0.4)


def test_subject_hash_is_keyed_stable_and_never_the_clear_id() -> None:
    first = subject_hash(b"key-1", "patient-42")
    assert first == subject_hash(b"key-1", "patient-42") and len(first) == 64
    assert "patient-42" not in first
    assert first != subject_hash(b"key-2", "patient-42") != subject_hash(b"key-1", "patient-43")
