"""Ground-truth feedback and erasure: checks each item, then joins it to its logged prediction through the
prediction log (`outcomes.Outcomes`), whichever process or replica made the prediction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vigil.server.errors import InvalidInput, NotSupported, PredictionNotFound, ServerError, quoted
from vigil.server.inference.outcomes import Outcomes
from vigil.server.inference.requests import MAX_REQUEST_ID_CHARACTERS
from vigil.server.store.records import Erased, Joined
from vigil.telemetry.quality.outcomes import InvalidFeedback, UnknownPrediction

MAX_SUBJECT_ID_BYTES = 256
"""Longest subject id accepted (it is only hashed, but a bound keeps logs and memory sane)."""

FeedbackResult = Joined


@dataclass(frozen=True)
class FeedbackRequest:
    request_id: str
    labels: Sequence[str]
    subject_id: str = ""


def check_subject(subject_id: str) -> None:
    """InvalidInput for a subject id over the bound."""
    if len(subject_id.encode("utf-8")) > MAX_SUBJECT_ID_BYTES:
        raise InvalidInput(f"subject_id is longer than {MAX_SUBJECT_ID_BYTES} bytes")


def _check(item: FeedbackRequest) -> ServerError | None:
    if not item.request_id:
        return InvalidInput("request_id is empty; give the request id the prediction's response carried")
    if not item.labels:
        return InvalidInput(f"feedback for {quoted(item.request_id)} has no labels; give one true label per "
                            "predicted row")
    if len(item.request_id) > MAX_REQUEST_ID_CHARACTERS:
        return PredictionNotFound(f"no prediction has request id {quoted(item.request_id)}: request ids have at "
                                  f"most {MAX_REQUEST_ID_CHARACTERS} characters")
    if not all("!" <= c <= "~" for c in item.request_id):
        return PredictionNotFound(f"no prediction has request id {quoted(item.request_id)}: request ids are "
                                  "printable ASCII without spaces")
    if len(item.subject_id.encode("utf-8")) > MAX_SUBJECT_ID_BYTES:
        return InvalidInput(f"subject_id is longer than {MAX_SUBJECT_ID_BYTES} bytes")
    return None


def _enabled(outcomes: Outcomes | None) -> Outcomes:
    if outcomes is None:
        raise NotSupported("quality monitoring is turned off on this server (VIGIL_QUALITY__ENABLED=false or "
                           "VIGIL_TELEMETRY__ENABLED=false), so feedback cannot be joined")
    return outcomes


async def give_feedback(outcomes: Outcomes | None, items: Sequence[FeedbackRequest]
                        ) -> list[FeedbackResult | ServerError]:
    """Attach true labels to the predictions the items name; per item the join, or a domain error saying what is
    wrong with it."""
    joiner = _enabled(outcomes)
    results: list[FeedbackResult | ServerError | None] = [_check(item) for item in items]
    valid = [(i, item) for i, item in enumerate(items) if results[i] is None]
    if valid:
        joined = await joiner.feedback([(item.request_id, item.labels, item.subject_id) for _, item in valid])
        for (i, _), outcome in zip(valid, joined, strict=True):
            results[i] = _translate(outcome)
    return [r for r in results if r is not None]


def _translate(outcome: Joined | Exception) -> FeedbackResult | ServerError:
    if isinstance(outcome, Joined):
        return outcome
    if isinstance(outcome, UnknownPrediction):
        return PredictionNotFound(str(outcome))
    if isinstance(outcome, InvalidFeedback):
        return InvalidInput(str(outcome))
    raise outcome


async def forget(outcomes: Outcomes | None, subject_id: str) -> Erased:
    """Erase every logged prediction and outcome of a subject."""
    joiner = _enabled(outcomes)
    if not subject_id:
        raise InvalidInput("subject_id is empty; give the subject id that predictions or feedback were sent with")
    if len(subject_id.encode("utf-8")) > MAX_SUBJECT_ID_BYTES:
        raise InvalidInput(f"subject_id is longer than {MAX_SUBJECT_ID_BYTES} bytes")
    return await joiner.forget(subject_id)
