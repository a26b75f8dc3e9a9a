"""The prediction log on both real backends: joins, figures by prediction time, ids, erasure, retention."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vigil.server.store.aggregates import FigureRequest
from vigil.server.store.base import Store
from vigil.server.store.records import Erased, FeedbackItem, Joined
from vigil.telemetry.quality.figures import QualityFigures
from vigil.telemetry.quality.outcomes import InvalidFeedback, LoggedPrediction, UnknownPrediction

NOW = 1_796_300_000.0  # 2026-12-03, a few minutes into a five-minute bucket
LABELS = ("red", "green", "blue")


def prediction(request_id: str, predicted: list[int], at: float = NOW, *, confidence: float = 0.8,
               client_id: str | None = None, model: str = "m", version: str = "1") -> LoggedPrediction:
    rows = len(predicted)
    probabilities = np.full((rows, 3), (1 - confidence) / 2, np.float32)
    probabilities[np.arange(rows), predicted] = confidence
    return LoggedPrediction(request_id, at, model, version, False, np.array(predicted, np.intp),
                            np.full(rows, confidence, np.float32), probabilities, client_id=client_id)


def figures(store: Store, count_rows: int = 1000, version: str = "1") -> QualityFigures:
    return store.figures(FigureRequest("m", version, LABELS, count_rows, 3600, store.retention_seconds))


def at(clock: float):
    return lambda: clock


@pytest.fixture(autouse=True)
def registered(store: Store) -> None:
    store.register("m", "1", LABELS)
    store.clock = at(NOW + 100)


def joined(result: Joined | Exception) -> Joined:
    assert isinstance(result, Joined), result
    return result


def test_scripted_feedback_gives_exact_figures(store: Store) -> None:
    # (true, predicted): 0→0 ×3, 0→1, 1→1 ×2, 1→2, 2→2, 2→0 ×2; two more predictions never get labels
    pairs = [(0, 0)] * 3 + [(0, 1)] + [(1, 1)] * 2 + [(1, 2)] + [(2, 2)] + [(2, 0)] * 2
    store.write([prediction(f"r{i}", [p]) for i, (_, p) in enumerate(pairs)]
                + [prediction("x1", [0]), prediction("x2", [1])])
    results = store.feedback([FeedbackItem(f"r{i}", (LABELS[t],)) for i, (t, _) in enumerate(pairs)])
    assert sum(joined(r).correct for r in results) == 6 and not any(joined(r).replaced for r in results)
    got = figures(store)
    assert got.recent.confusion.tolist() == [[3, 1, 0], [0, 2, 1], [2, 0, 1]] == got.timed.metrics.confusion.tolist()
    assert got.labelled_total == 10
    hour, day, week = got.windows
    assert (hour.name, day.name, week.name) == ("hour", "day", "week")
    for window in got.windows:
        assert window.predictions == 12 and window.labelled == 10
        assert window.metrics.accuracy == pytest.approx(0.6) and window.coverage == pytest.approx(10 / 12)
        assert window.expected_labelled == pytest.approx(0.8) and window.expected_all == pytest.approx(0.8)
        assert window.delay_percentiles == (128.0, 128.0, 128.0)  # 100 s: the bucket [64, 128) s
    [today] = got.days
    assert today.name == "2026-12-03" and today.predictions == 12 and today.labelled == 10
    [bin_] = got.reliability  # every row at confidence 0.8
    assert (bin_.lower, bin_.upper, bin_.rows) == (pytest.approx(0.8), pytest.approx(0.9), 10)
    assert bin_.mean_confidence == pytest.approx(0.8) and bin_.accuracy == pytest.approx(0.6)


def test_the_count_window_takes_the_newest_rows_by_prediction_time(store: Store) -> None:
    store.write([prediction("old", [1, 1], at=NOW - 50), prediction("a", [0], at=NOW - 20),
                 prediction("b", [1, 1], at=NOW - 10)])
    store.feedback([FeedbackItem("b", ("green", "green")), FeedbackItem("old", ("red", "red")),
                    FeedbackItem("a", ("red",))])
    got = figures(store, count_rows=3)
    assert got.recent.rows == 3 and got.recent.accuracy == 1.0  # the newest three rows are all right
    assert got.windows[0].labelled == 5 and got.windows[0].metrics.accuracy == pytest.approx(3 / 5)


def test_feedback_twice_counts_once_with_the_later_labels(store: Store) -> None:
    store.write([prediction("r", [1])])
    first = joined(store.feedback([FeedbackItem("r", ("red",))])[0])
    store.clock = at(NOW + 5000)
    second = joined(store.feedback([FeedbackItem("r", ("green",))])[0])
    assert (first.replaced, first.correct, second.replaced, second.correct) == (False, 0, True, 1)
    got = figures(store)
    assert got.labelled_total == 1 and got.recent.accuracy == 1.0
    assert got.windows[2].delay_percentiles == (8192.0, 8192.0, 8192.0)  # the later label's delay only
    # twice in one call: the later item wins too
    store.write([prediction("s", [0])])
    results = store.feedback([FeedbackItem("s", ("red",)), FeedbackItem("s", ("blue",))])
    assert [joined(r).replaced for r in results] == [False, True]
    assert figures(store).windows[2].metrics.confusion[2, 0] == 1 and figures(store).labelled_total == 2


def test_feedback_that_does_not_fit_is_refused_and_changes_nothing(store: Store) -> None:
    store.write([prediction("r", [0, 1])])
    short, unknown, good = store.feedback([FeedbackItem("r", ("red",)), FeedbackItem("r", ("red", "purple")),
                                           FeedbackItem("r", ("red", "green"))])
    assert isinstance(short, InvalidFeedback) and "predicted 2 row(s)" in str(short)
    assert isinstance(unknown, InvalidFeedback) and "['purple'] are not labels of m version 1" in str(unknown)
    assert joined(good).correct == 2 and figures(store).labelled_total == 2


def test_a_callers_id_finds_its_prediction_and_never_replaces_one(store: Store) -> None:
    store.write([prediction("server-1", [0]), prediction("server-2", [1]), prediction("server-3", [2]),
                 prediction("server-4", [2])],
                [("server-1", "case-1", None), ("server-2", "shared", None), ("server-3", "shared", None),
                 ("server-4", "server-1", None)])
    by_case, shared, by_server_id = store.feedback([FeedbackItem("case-1", ("red",)), FeedbackItem("shared", ("red",)),
                                                    FeedbackItem("server-1", ("blue",))])
    assert joined(by_case).request_id == "server-1"
    assert isinstance(shared, InvalidFeedback) and "2 predictions were sent with the id 'shared'" in str(shared)
    # a caller who sent another's server id as its own does not take that prediction's feedback
    assert joined(by_server_id).request_id == "server-1" and joined(by_server_id).replaced
    # an id that arrives before its prediction is written waits for it
    assert store.write([], [("server-5", "late", None)]) == {"server-5"}
    store.write([prediction("server-5", [0])], [("server-5", "late", None)])
    assert joined(store.feedback([FeedbackItem("late", ("red",))])[0]).request_id == "server-5"
    # a later annotation adds a subject, and never replaces the caller's id
    assert store.write([], [("server-5", "other", "hash-5")]) == set()
    assert isinstance(store.feedback([FeedbackItem("other", ("red",))])[0], UnknownPrediction)
    assert store.forget("hash-5") == Erased(1, 1)


def test_unknown_ids_say_whether_they_were_never_logged_or_are_past_retention(store: Store) -> None:
    now = time.time()
    store.clock = at(now)
    fresh = f"{int((now - 60) * 1000):012x}" + "ab" * 10
    just_now = f"{int(now * 1000):012x}" + "ab" * 10
    stale = f"{int((now - 31 * 86_400) * 1000):012x}" + "ab" * 10
    never, old, chosen, pending = store.feedback([FeedbackItem(fresh, ("red",)), FeedbackItem(stale, ("red",)),
                                                  FeedbackItem("case-7", ("red",)), FeedbackItem(just_now, ("red",))])
    assert isinstance(pending, UnknownPrediction) and "has been logged yet" in str(pending)
    assert isinstance(never, UnknownPrediction) and "was ever logged" in str(never)
    assert isinstance(old, UnknownPrediction) and "past the 30-day retention period" in str(old)
    assert isinstance(chosen, UnknownPrediction) and "never logged, or an id a caller chose" in str(chosen)


def test_a_label_ten_days_late_counts_in_the_day_of_its_prediction(store: Store) -> None:
    store.write([prediction("then", [2], at=NOW - 10 * 86_400), prediction("now", [0])])
    store.feedback([FeedbackItem("then", ("blue",)), FeedbackItem("now", ("green",))])
    got = figures(store)
    then, today = got.days
    assert (then.name, then.predictions, then.labelled, then.metrics.accuracy) == ("2026-11-23", 1, 1, 1.0)
    assert (today.name, today.labelled, today.metrics.accuracy) == ("2026-12-03", 1, 0.0)
    assert got.windows[2].labelled == 1 and got.labelled_total == 2  # the week holds only today's
    assert then.delay_percentiles == (2.0 ** 20,) * 3  # ten days: the bucket [2^19, 2^20) s


def test_erasure_removes_exactly_the_subjects_rows(store: Store) -> None:
    store.write([prediction("a1", [0]), prediction("a2", [1]), prediction("b1", [2]), prediction("c1", [0])])
    store.feedback([FeedbackItem("a1", ("red",), subject_hash="hash-a"), FeedbackItem("a2", ("red",), "hash-a"),
                    FeedbackItem("b1", ("blue",), "hash-b")])
    assert store.forget("hash-a") == Erased(predictions=2, outcomes=2)
    assert store.forget("hash-a") == Erased(0, 0)
    got = figures(store)
    assert got.labelled_total == 1 and got.windows[0].predictions == 2 and got.recent.accuracy == 1.0
    left = store.feedback([FeedbackItem("a1", ("red",)), FeedbackItem("b1", ("blue",)), FeedbackItem("c1", ("red",))])
    assert isinstance(left[0], UnknownPrediction) and joined(left[1]).replaced and not joined(left[2]).replaced


def test_rows_past_the_retention_period_are_purged_with_their_aggregates(store: Store) -> None:
    store.write([prediction("old", [0], at=NOW - 40 * 86_400), prediction("new", [0])])
    store.feedback([FeedbackItem("old", ("red",)), FeedbackItem("new", ("red",))])
    assert [d.name for d in figures(store).days] == ["2026-12-03"]  # days start within the retention period
    assert store.purge() == 1
    assert store.purge() == 0
    assert isinstance(store.feedback([FeedbackItem("old", ("red",))])[0], UnknownPrediction)
    assert figures(store).labelled_total == 1


def test_the_subject_key_is_made_once_and_kept(store: Store) -> None:
    first = store.secret("subject_hash_key", lambda: b"first")
    assert first == b"first" and store.secret("subject_hash_key", lambda: b"second") == b"first"


def test_figures_of_another_version_are_apart(store: Store) -> None:
    store.register("m", "2", LABELS)
    store.write([prediction("v1", [0]), prediction("v2", [1], version="2")])
    store.feedback([FeedbackItem("v1", ("red",)), FeedbackItem("v2", ("red",))])
    assert figures(store).recent.accuracy == 1.0 and figures(store, version="2").recent.accuracy == 0.0


def test_a_batch_written_twice_counts_once(store: Store) -> None:
    """A write retried after a commit that did happen (its acknowledgement lost) must not count its rows again."""
    batch = [prediction("once", [0]), prediction("twice", [1])]
    store.write(batch)
    store.write(batch)
    store.write([prediction("twice", [1]), prediction("third", [2])])
    assert figures(store).windows[0].predictions == 3


def test_a_shadow_named_beside_its_request_is_labelled_once(store: Store) -> None:
    store.register("m", "2", LABELS)
    shadow = LoggedPrediction("r.shadow", NOW, "m", "2", True, np.array([0]), np.array([0.8], np.float32))
    store.write([prediction("r", [0]), shadow])
    first, second = store.feedback([FeedbackItem("r.shadow", ("red",), join_shadow_suffix=".shadow"),
                                    FeedbackItem("r", ("red",), join_shadow_suffix=".shadow")])
    assert joined(first).version == "2" and joined(second).shadow is not None
    assert joined(second).shadow.replaced  # type: ignore[union-attr]  # the first item labelled it already
    assert figures(store, version="2").labelled_total == 1 and figures(store).labelled_total == 1
