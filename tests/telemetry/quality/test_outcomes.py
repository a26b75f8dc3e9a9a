"""Prediction store and labelled windows: exact accuracy and per-class metrics, expiry, replacement, hashing."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.telemetry.quality.outcomes import (
    Labelled,
    LabelledWindow,
    PredictionStore,
    StoredPrediction,
    UnknownPrediction,
    subject_hash,
)


def labelled(true: list[int], predicted: list[int], at: float) -> Labelled:
    return Labelled(np.array(true, np.intp), np.array(predicted, np.intp), at)


def test_scripted_sequence_gives_exact_accuracy_and_per_class_metrics() -> None:
    window = LabelledWindow(3, count_rows=100, seconds=1000, max_rows=1000)
    # (true, predicted): 0→0 ×3, 0→1 ×1, 1→1 ×2, 1→2 ×1, 2→2 ×1, 2→0 ×2
    pairs = [(0, 0)] * 3 + [(0, 1)] + [(1, 1)] * 2 + [(1, 2)] + [(2, 2)] + [(2, 0)] * 2
    for i, (t, p) in enumerate(pairs):
        window.add(f"r{i}", labelled([t], [p], at=float(i)))
    recent, timed = window.metrics(now=10.0)
    assert recent.rows == timed.rows == 10
    assert recent.accuracy == pytest.approx(6 / 10)
    assert recent.confusion.tolist() == [[3, 1, 0], [0, 2, 1], [2, 0, 1]]
    (p0, r0, f0, s0), (p1, r1, f1, s1), (p2, r2, f2, s2) = recent.per_class()
    assert (p0, r0, s0) == (pytest.approx(3 / 5), pytest.approx(3 / 4), 4)
    assert f0 == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    assert (p1, r1, s1) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3) and f1 == pytest.approx(2 / 3)
    assert (p2, r2, s2) == (pytest.approx(1 / 2), pytest.approx(1 / 3), 3) and f2 == pytest.approx(0.4)


def test_count_window_keeps_the_newest_rows_and_time_window_drops_old_ones() -> None:
    window = LabelledWindow(2, count_rows=3, seconds=10, max_rows=100)
    window.add("old", labelled([0, 0], [1, 1], at=0.0))  # two wrong rows
    window.add("a", labelled([0], [0], at=5.0))
    window.add("b", labelled([1, 1], [1, 1], at=8.0))
    recent, timed = window.metrics(now=9.0)
    assert recent.rows == 3 and recent.accuracy == 1.0  # the newest three rows are all right
    assert timed.rows == 5 and timed.accuracy == pytest.approx(3 / 5)
    recent, timed = window.metrics(now=10.5)  # "old" is now more than 10 s old
    assert timed.rows == 3 and timed.accuracy == 1.0
    assert window.received == 5  # received counts rows once each, expired or not


def test_feedback_twice_for_one_id_counts_once_with_the_later_labels() -> None:
    window = LabelledWindow(2, count_rows=10, seconds=100, max_rows=100)
    assert window.add("r", labelled([0], [1], at=1.0)) is False
    assert window.add("r", labelled([1], [1], at=2.0)) is True
    recent, timed = window.metrics(now=3.0)
    assert recent.rows == timed.rows == 1 and recent.accuracy == timed.accuracy == 1.0
    assert window.received == 1


def test_an_empty_window_has_no_accuracy_and_zero_per_class_metrics() -> None:
    recent, _ = LabelledWindow(2, count_rows=10, seconds=100, max_rows=100).metrics(now=0.0)
    assert recent.accuracy is None and recent.per_class() == [(0.0, 0.0, 0.0, 0), (0.0, 0.0, 0.0, 0)]


def test_labelled_rows_are_bounded() -> None:
    window = LabelledWindow(2, count_rows=1000, seconds=1000, max_rows=10)
    for i in range(30):
        window.add(f"r{i}", labelled([0], [0], at=float(i)))
    assert window.metrics(now=30.0)[1].rows == 10


def prediction(at: float) -> StoredPrediction:
    return StoredPrediction("m", "1", ("a", "b"), np.array([0]), stored_at=at)


def test_store_forgets_expired_and_evicted_predictions() -> None:
    store = PredictionStore(size=2, ttl_seconds=10)
    store.put("a", prediction(0.0))
    store.put("b", prediction(1.0))
    assert store.get("a", now=5.0).model == "m"
    store.put("c", prediction(2.0))  # over the size: the oldest ("a") goes
    with pytest.raises(UnknownPrediction, match="'a'"):
        store.get("a", now=5.0)
    assert store.evicted == 1
    with pytest.raises(UnknownPrediction, match="older than the 10 s"):
        store.get("b", now=11.5)
    assert store.get("c", now=11.5).stored_at == 2.0
    with pytest.raises(UnknownPrediction):
        store.get("never", now=0.0)


def test_subject_hash_is_keyed_stable_and_never_the_clear_id() -> None:
    first = subject_hash(b"key-1", "patient-42")
    assert first == subject_hash(b"key-1", "patient-42") and len(first) == 64
    assert "patient-42" not in first
    assert first != subject_hash(b"key-2", "patient-42") != subject_hash(b"key-1", "patient-43")
