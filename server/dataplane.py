"""The one path every inference request takes, whichever protocol it arrived on."""

from __future__ import annotations

import logging
import uuid

import numpy as np

from server.errors import InferenceFailed, ServerError
from server.registry import ModelRepository, ModelVersion
from server.requests import Classification, InferRequest, InferResult
from server.sessions import Arrays
from server.validation import Limits, check_inputs, check_outputs

logger = logging.getLogger(__name__)


def new_request_id() -> str:
    return uuid.uuid4().hex


class DataPlane:
    """Resolves, validates and runs requests; protocol servicers convert to and from it.

    >>> plane = DataPlane(repository, limits)
    >>> result = await plane.infer(InferRequest("breast_cancer", 0, {"features": rows}))
    >>> result.classification.labels
    ['benign']
    """

    def __init__(self, repository: ModelRepository, limits: Limits) -> None:
        self.repository = repository
        self.limits = limits

    async def infer(
        self, request: InferRequest, *, request_id: str | None = None, deadline: float | None = None
    ) -> InferResult:
        """Resolve, validate and run one request. `deadline` is a `time.monotonic()` instant, or None."""
        request_id = request_id or new_request_id()
        version = self.repository.resolve(request.model_name, request.model_version)
        signature = version.signature
        rows = check_inputs(
            version.name, request.inputs, signature,
            batching=version.config.max_batch_size > 0, limits=self.limits,
        )
        wanted = check_outputs(version.name, request.output_names, signature)
        probability_output = version.config.probability_output
        to_compute = wanted if probability_output is None or probability_output in wanted else (
            *wanted, probability_output)
        try:
            ran = await version.run(request.inputs, to_compute, rows=rows, request_id=request_id, deadline=deadline)
        except ServerError:
            raise
        except Exception:
            logger.exception(
                "inference failed for request %s on model %s version %d", request_id, version.name, version.version
            )
            raise InferenceFailed(request_id) from None
        outputs = ran.outputs
        classification = _classify(version, outputs)
        return InferResult(
            request_id=request_id,
            model_name=version.name,
            model_version=version.version,
            outputs={name: outputs[name] for name in wanted},
            classification=classification,
            timings={"queue": ran.queue_seconds, "compute": ran.compute_seconds},
            batch_size=ran.batch_size,
        )


def _classify(version: ModelVersion, outputs: Arrays) -> Classification | None:
    """Top class and its probability per row, when the model is configured as a classifier."""
    config = version.config
    if config.probability_output is None:
        return None
    probabilities = np.asarray(outputs[config.probability_output])
    if probabilities.ndim != 2 or probabilities.shape[1] == 0:
        return None
    top = probabilities.argmax(axis=1)
    labels = config.labels or [str(i) for i in range(probabilities.shape[1])]
    if len(labels) != probabilities.shape[1]:
        return None
    label_array = np.asarray(labels, dtype=object)
    return Classification(
        labels=label_array[top].tolist(),
        probabilities=probabilities[np.arange(len(top)), top].astype(np.float32),
    )
