"""`vigil predict`: predictions for the rows of a CSV or JSON file."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import click
import numpy as np
import numpy.typing as npt

from vigil.clients.cli.group import call, client_for, jsonable, main, target_option, timeout_option
from vigil.clients.types import ModelInfo, Prediction
from vigil.protos.tensors import NUMPY_DTYPES, DataType


@main.command()
@click.option("--model", required=True, help="Model name.")
@click.option("--input", "input_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Rows as CSV (optional header) or JSON (a list of rows, or {input name: rows}).")
@click.option("--version", type=int, default=0, help="Version (default: the default version).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@target_option
@timeout_option
def predict(model: str, input_file: Path, version: int, as_json: bool, target: str, timeout: float) -> None:
    """Predict from a file of rows; for classifiers, print each row's label and probability."""
    with client_for(target, timeout) as client:
        info = call(client.model_metadata, model, version)
        inputs = read_inputs(input_file, info)
        result = call(client.predict, model, inputs, version=version)
    if as_json:
        click.echo(json.dumps(_prediction_json(result), indent=2))
        return
    click.echo(f"model {result.model_name} version {result.model_version}  request {result.request_id}")
    if result.labels:
        for row, (label, probability) in enumerate(zip(result.labels, result.probabilities, strict=True)):
            click.echo(f"{row:>5}  {label:<20} {probability:.4f}")
    else:
        for name, array in result.outputs.items():
            click.echo(f"{name} {list(array.shape)}: {np.array2string(array, threshold=50)}")


def read_inputs(path: Path, info: ModelInfo) -> dict[str, npt.NDArray[np.generic]]:
    """Rows from a CSV or JSON file, as arrays of the model's input dtypes."""
    dtypes = {i.name: NUMPY_DTYPES[DataType.Value(i.dtype)] for i in info.inputs}
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            unknown = set(data) - set(dtypes)
            if unknown:
                raise click.ClickException(f"{path} names inputs the model does not take: "
                                           f"{', '.join(sorted(unknown))}")
            return {name: np.asarray(rows, dtype=dtypes[name]) for name, rows in data.items()}
        return {_single_input(info, path): np.asarray(data, dtype=next(iter(dtypes.values())))}
    with path.open(newline="", encoding="utf-8") as f:
        lines = [(number, row) for number, row in enumerate(csv.reader(f), start=1) if row]
    header: list[str] = []
    if lines and not _is_numeric(lines[0][1]):
        header = lines.pop(0)[1]
    if not lines:
        raise click.ClickException(f"{path} holds no rows")
    name = _single_input(info, path)
    width = len(lines[0][1])
    values = []
    for number, row in lines:
        if len(row) != width:
            raise click.ClickException(f"{path}, line {number}: {len(row)} values where the first row has {width}")
        values.append([_number(path, number, column, header, cell) for column, cell in enumerate(row, start=1)])
    return {name: np.asarray(values, dtype=dtypes[name])}


def _number(path: Path, line: int, column: int, header: list[str], cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        named = f" ({header[column - 1]!r})" if column <= len(header) else ""
        raise click.ClickException(f"{path}, line {line}, column {column}{named}: {cell!r} is not a number") from None


def _single_input(info: ModelInfo, path: Path) -> str:
    if len(info.inputs) != 1:
        raise click.ClickException(
            f"model '{info.name}' takes {len(info.inputs)} inputs; give {path.name} as JSON {{input name: rows}}"
        )
    return info.inputs[0].name


def _is_numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _prediction_json(result: Prediction) -> dict[str, Any]:
    out: dict[str, Any] = {
        "request_id": result.request_id,
        "model_name": result.model_name,
        "model_version": result.model_version,
        "outputs": {name: jsonable(array) for name, array in result.outputs.items()},
    }
    if result.labels:
        out["predictions"] = [
            {"label": label, "probability": float(p)}
            for label, p in zip(result.labels, result.probabilities, strict=True)
        ]
    return out


