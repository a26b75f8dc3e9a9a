"""Building a model version's reference profile from a data file: the model is run on the rows locally (ONNX
Runtime on the CPU) and the profile is written beside the model as `profile.json`."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vigil.protos.tensors import NUMPY_DTYPES
from vigil.server.models.config import ModelConfig, load_config
from vigil.server.models.sessions import ModelSession
from vigil.telemetry.quality.reference_profile import PROFILE_FILE, ReferenceProfile, build_profile

CHUNK_ROWS = 1024
"""Rows per ONNX Runtime run while profiling."""


@dataclass(frozen=True)
class ReferenceData:
    """Rows read from a CSV file: features, their names, and the true labels when a label column was named."""

    features: npt.NDArray[np.float32]
    names: list[str]
    labels: list[str] | None


def read_reference_csv(path: Path, label_column: str | None = None) -> ReferenceData:
    """A CSV with a header row; every column but `label_column` must be numeric."""
    with path.open(newline="", encoding="utf-8") as f:
        lines = [(number, row) for number, row in enumerate(csv.reader(f), start=1) if row]
    if len(lines) < 2:
        raise ValueError(f"{path} needs a header row and at least one data row")
    header, body = lines[0][1], [row for _, row in lines[1:]]
    label_index = None
    if label_column is not None:
        if label_column not in header:
            raise ValueError(f"{path} has no column {label_column!r} (columns: {', '.join(header)})")
        label_index = header.index(label_column)
    names = [h for i, h in enumerate(header) if i != label_index]
    values = []
    for number, row in lines[1:]:
        if len(row) != len(header):
            raise ValueError(f"{path}, line {number}: {len(row)} values where the header names {len(header)}")
        values.append([_number(path, number, column, header, cell) for column, cell in enumerate(row)
                       if column != label_index])
    features = np.asarray(values, np.float32)
    labels = [row[label_index] for row in body] if label_index is not None else None
    return ReferenceData(features, names, labels)


def _number(path: Path, line: int, column: int, header: list[str], cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise ValueError(f"{path}, line {line}, column {column + 1} ({header[column]!r}): {cell!r} is not a "
                         "number") from None


def profile_version(models_dir: Path, model: str, version: int, data: ReferenceData, *,
                    progress: Callable[[int], None] | None = None, bins: int = 10) -> tuple[ReferenceProfile, Path]:
    """Run the model on the reference rows and build its profile; returns it and where it belongs.
    `progress` is called with a count of steps done: one per inference chunk, then one per feature."""
    model_dir = models_dir / model
    if not model_dir.is_dir():
        raise ValueError(f"no model {model!r} in {models_dir}")
    config = load_config(model_dir)
    if not (config.probability_output and config.labels):
        raise ValueError(f"model {model!r} is not a classifier: its config.toml needs probability_output and labels")
    if version == 0:
        numbers = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        if not numbers:
            raise ValueError(f"model {model!r} has no version folders")
        version = numbers[-1]
    path = model_dir / str(version) / "model.onnx"
    if not path.is_file():
        raise ValueError(f"model {model!r} has no version {version}")
    cpu = ModelConfig.model_validate({**config.model_dump(), "execution_providers": ["cpu"]})
    session = ModelSession(path, cpu)
    inputs = session.signature.inputs
    if len(inputs) != 1:
        raise ValueError(f"model {model!r} takes {len(inputs)} inputs; profiles cover a single [rows, features] input")
    spec = inputs[0]
    chunks = []
    for start in range(0, len(data.features), CHUNK_ROWS):
        rows = data.features[start:start + CHUNK_ROWS]
        feed = {spec.name: rows.astype(NUMPY_DTYPES[spec.dtype], copy=False)}
        outputs = session.run(feed, [config.probability_output])
        chunks.append(np.asarray(outputs[config.probability_output], np.float64))
        if progress is not None:
            progress(1)
    true = None
    if data.labels is not None:
        index = {label: i for i, label in enumerate(config.labels)}
        unknown = sorted(set(data.labels) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown} are not labels of {model!r} ({', '.join(config.labels)})")
        true = np.asarray([index[label] for label in data.labels], np.intp)
    profile = build_profile(data.features, np.concatenate(chunks), labels=config.labels, input_name=spec.name,
                            feature_names=data.names, true_classes=true, bins=bins, progress=progress)
    return profile, model_dir / str(version) / PROFILE_FILE
