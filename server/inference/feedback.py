"""Ground-truth feedback: checks a feedback item and joins it to its prediction through the quality monitor."""

from __future__ import annotations

from collections.abc import Sequence

from vigil.server.errors import InvalidInput, NotSupported, PredictionNotFound, quoted
from vigil.server.inference.requests import MAX_REQUEST_ID_CHARACTERS
from vigil.telemetry.calls.context import annotate_call
from vigil.telemetry.quality.monitor import FeedbackResult, QualityMonitor
from vigil.telemetry.quality.outcomes import InvalidFeedback, UnknownPrediction

MAX_SUBJECT_ID_BYTES = 256
"""Longest subject id accepted (it is only hashed, but a bound keeps logs and memory sane)."""


def give_feedback(monitor: QualityMonitor | None, request_id: str, labels: Sequence[str],
                  subject_id: str = "") -> FeedbackResult:
    """Attach true labels to the prediction made for `request_id`; domain errors say what is wrong."""
    if monitor is None:
        raise NotSupported("quality monitoring is turned off on this server (VIGIL_QUALITY__ENABLED=false or "
                           "VIGIL_TELEMETRY__ENABLED=false), so feedback cannot be joined")
    if not request_id:
        raise InvalidInput("request_id is empty; give the request id the prediction's response carried")
    if not labels:
        raise InvalidInput(f"feedback for {quoted(request_id)} has no labels; give one true label per predicted row")
    if len(request_id) > MAX_REQUEST_ID_CHARACTERS:
        raise PredictionNotFound(f"no prediction has request id {quoted(request_id)}: request ids have at most "
                                 f"{MAX_REQUEST_ID_CHARACTERS} characters")
    if len(subject_id.encode("utf-8")) > MAX_SUBJECT_ID_BYTES:
        raise InvalidInput(f"subject_id is longer than {MAX_SUBJECT_ID_BYTES} bytes")
    try:
        result = monitor.feedback(request_id, labels, subject_id)
    except UnknownPrediction as exc:
        raise PredictionNotFound(str(exc)) from None
    except InvalidFeedback as exc:
        raise InvalidInput(str(exc)) from None
    # The server's id of the prediction: the one sent may be an id the caller chose, which is never logged.
    annotate_call(request_id=result.request_id, model=result.model, version=int(result.version))
    return result
