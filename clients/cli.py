"""The `vigil` command: serve models, and talk to a running server through the public client."""

from __future__ import annotations

import csv
import json
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import numpy.typing as npt

from clients.channel import TLS
from clients.client import DEFAULT_TARGET, Client
from clients.errors import VigilError
from clients.types import ModelInfo, ModelSummary, Prediction
from protos.tensors import NUMPY_DTYPES, DataType

target_option = click.option(
    "--target", envvar="VIGIL_TARGET", default=DEFAULT_TARGET, show_default=True,
    help="host:port of the server's gRPC endpoint (env VIGIL_TARGET).",
)
timeout_option = click.option("--timeout", type=float, default=30.0, show_default=True, help="Deadline in seconds.")


@dataclass(frozen=True)
class Connection:
    """How client commands reach the server: TLS and the bearer token, from the group's options."""

    tls: TLS | None = None
    token: str | None = None

    def client(self, target: str, timeout: float | None) -> Client:
        return Client(target, timeout=timeout, tls=self.tls, token=self.token)

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls.ca_file) if self.tls.ca_file else None)
        if self.tls.cert_file and self.tls.key_file:
            context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        return context


def _client(target: str, timeout: float | None) -> Client:
    connection = click.get_current_context().find_object(Connection) or Connection()
    return connection.client(target, timeout)


path_type = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
@click.version_option(package_name="vigil")
@click.option("--token", envvar="VIGIL_TOKEN", help="Bearer token sent with every call (env VIGIL_TOKEN).")
@click.option("--tls", is_flag=True, envvar="VIGIL_TLS",
              help="Speak TLS, trusting the system's CAs (implied by --ca-file and --cert-file).")
@click.option("--ca-file", type=path_type, envvar="VIGIL_TLS_CA", help="CA that signed the server's certificate.")
@click.option("--cert-file", type=path_type, envvar="VIGIL_TLS_CERT", help="Client certificate, for mutual TLS.")
@click.option("--key-file", type=path_type, envvar="VIGIL_TLS_KEY", help="Client certificate's key.")
@click.pass_context
def main(ctx: click.Context, token: str | None, tls: bool, ca_file: Path | None, cert_file: Path | None,
         key_file: Path | None) -> None:
    """Vigil: a gRPC model server for ONNX models with streaming telemetry.

    The connection options go before the command: `vigil --ca-file ca.crt --token T models`."""
    if (cert_file is None) != (key_file is None):
        raise click.UsageError("--cert-file and --key-file go together")
    secure = tls or ca_file is not None or cert_file is not None
    ctx.obj = Connection(TLS(ca_file, cert_file, key_file) if secure else None, token or None)


@main.command()
@click.option("--models", "models_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Model repository folder (default: the bundled breast-cancer model).")
@click.option("--host", help="Address to listen on (default 0.0.0.0).")
@click.option("--port", "grpc_port", type=int, help="gRPC port (default 8001; 0 picks a free one).")
@click.option("--http-port", type=int, help="HTTP port for /metrics (default 8002; 0 picks a free one).")
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
def serve(**options: Any) -> None:
    """Serve the models in a repository. Every option also reads its VIGIL_* environment variable."""
    # The server is imported here, not at the top, so client-only commands stay light.
    from server.__main__ import main as serve_main
    from server.settings import Settings

    overrides = {key: value for key, value in options.items() if value is not None}
    sys.exit(serve_main(Settings(**overrides)))


@main.command()
@target_option
@timeout_option
def models(target: str, timeout: float) -> None:
    """List the server's models and the state of each version."""
    with _client(target, timeout) as client:
        summaries = _call(client.list_models)
    for model in summaries:
        _echo_model(model)


def _echo_model(model: ModelSummary) -> None:
    default = model.default_version or "-"
    click.echo(f"{model.name}  (default version {default})" + (f"  {model.reason}" if model.reason else ""))
    for v in model.versions:
        providers = ",".join(v.execution_providers)
        line = f"  {v.version:>4}  {v.state:<8} {providers}"
        click.echo(line + (f"  {v.reason}" if v.reason else ""))


load_timeout_option = click.option(
    "--timeout", type=float, default=300.0, show_default=True,
    help="Deadline in seconds (the server finishes the operation even if it passes).")


@main.command()
@click.argument("model")
@target_option
@load_timeout_option
def load(model: str, target: str, timeout: float) -> None:
    """Load or reload MODEL from its folder on the server: new and changed versions load and warm up while the
    loaded ones serve. A version that fails leaves what was serving in place; the command then exits 1."""
    with _client(target, timeout) as client:
        summary = _call(client.load_model, model)
    _echo_model(summary)


@main.command()
@click.argument("model")
@target_option
@load_timeout_option
def unload(model: str, target: str, timeout: float) -> None:
    """Unload every version of MODEL once its queued requests have finished."""
    with _client(target, timeout) as client:
        summary = _call(client.unload_model, model)
    _echo_model(summary)


@main.command()
@click.argument("model")
@click.option("--version", type=int, default=0, help="Version (default: the default version).")
@target_option
@timeout_option
def metadata(model: str, version: int, target: str, timeout: float) -> None:
    """Show a model version's inputs, outputs and configuration as JSON."""
    with _client(target, timeout) as client:
        info = _call(client.model_metadata, model, version)
    click.echo(json.dumps(_jsonable(info.__dict__), indent=2))


@main.command()
@click.option("--model", "models", multiple=True, help="Model to show (repeat for several; default all).")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between frames (0.1 to 60).")
@click.option("--frames", type=int, default=0, help="Stop after this many frames (default: until interrupted).")
@target_option
def watch(models: tuple[str, ...], interval: float, frames: int, target: str) -> None:
    """A live dashboard of the server's Telemetry stream: per-model throughput and latency with trends, alerts
    and recent events."""
    from rich.console import Console

    from clients.watch import watch as show

    console = Console()
    if not console.is_terminal:  # piped: wide enough for every column
        console = Console(width=160)
    with _client(target, None) as client:
        try:
            show(client.telemetry(interval_ms=round(interval * 1000), models=models), console, limit=frames)
        except VigilError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
        except KeyboardInterrupt:
            pass


@main.command()
@click.option("--model", required=True, help="Model name (its folder in the repository).")
@click.option("--data", "data_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV of reference rows with a header row (e.g. the training data).")
@click.option("--models", "models_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Model repository folder (default: the bundled models).")
@click.option("--version", type=int, default=0, help="Version (default: the highest-numbered).")
@click.option("--label-column", help="Column holding each row's true label (enables calibration and accuracy).")
@click.option("--bins", type=click.IntRange(2, 100), default=10, show_default=True, help="Quantile bins per feature.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the profile (default: profile.json in the version's folder).")
def profile(model: str, data_file: Path, models_dir: Path | None, version: int, label_column: str | None,
            bins: int, output: Path | None) -> None:
    """Build a model version's reference profile for drift checks, from a data file, on this machine."""
    from rich.progress import Progress

    from server.profiling import CHUNK_ROWS, profile_version, read_reference_csv
    from server.settings import DEFAULT_MODELS_DIR

    try:
        data = read_reference_csv(data_file, label_column)
        steps = -(-len(data.features) // CHUNK_ROWS) + len(data.names)
        with Progress(transient=True) as bar:
            task = bar.add_task(f"profiling {model}", total=steps)
            built, path = profile_version(models_dir or DEFAULT_MODELS_DIR, model, version, data, bins=bins,
                                          progress=lambda n: bar.advance(task, n))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    target = output or path
    built.save(target)
    accuracy = f", reference accuracy {built.accuracy:.3f}" if built.accuracy is not None else ""
    click.echo(f"wrote {target}: {built.rows} rows, {len(built.features)} features{accuracy}")


@main.command()
@click.option("--since", default="24h", show_default=True,
              help="The period to report on, back from now: e.g. 30m, 24h, 7d (at most the server's retention).")
@click.option("--model", help="Only this model (default: every model).")
@click.option("--http", "http_target", default="127.0.0.1:8002", show_default=True, envvar="VIGIL_HTTP_TARGET",
              help="The server's HTTP port, host:port.")
@click.option("--json", "as_json", is_flag=True, help="Save the report as JSON instead of HTML.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to save it (default vigil-report.html, or .json with --json).")
def report(since: str, model: str | None, http_target: str, as_json: bool, output: Path | None) -> None:
    """Save the server's report over a period: requests, errors by code, latency percentiles, throughput, uptime,
    per-model and per-version usage, class mix, accuracy, drift and alerts fired, with plots; and the drift and
    accuracy detail of every monitored classifier (every drift test, a reference-vs-live plot per feature)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    connection = click.get_current_context().find_object(Connection) or Connection()
    query = f"?{urllib.parse.urlencode({'since': since, **({'model': model} if model else {})})}"
    scheme = "https" if connection.tls is not None else "http"
    url = f"{scheme}://{http_target}/report{'.json' if as_json else ''}{query}"
    request = urllib.request.Request(url)
    if connection.token:
        request.add_header("Authorization", f"Bearer {connection.token}")
    try:
        with urllib.request.urlopen(request, timeout=30, context=connection.ssl_context()) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise click.ClickException(f"{url}: {exc.code} {exc.read().decode(errors='replace').strip()}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    target = output or Path("vigil-report.json" if as_json else "vigil-report.html")
    target.write_bytes(body)
    click.echo(f"wrote {target}")


@main.command()
@click.option("--service", default="", help="Health service name ('' for the server, model/NAME for a model).")
@target_option
@timeout_option
def health(service: str, target: str, timeout: float) -> None:
    """Print the server's (or a service's) health; exit 0 only when SERVING."""
    with _client(target, timeout) as client:
        status = _call(client.health, service)
    click.echo(status)
    sys.exit(0 if status == "SERVING" else 1)


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
    with _client(target, timeout) as client:
        info = _call(client.model_metadata, model, version)
        inputs = read_inputs(input_file, info)
        result = _call(client.predict, model, inputs, version=version)
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
                raise click.UsageError(f"{path} names inputs the model does not take: {', '.join(sorted(unknown))}")
            return {name: np.asarray(rows, dtype=dtypes[name]) for name, rows in data.items()}
        return {_single_input(info, path): np.asarray(data, dtype=next(iter(dtypes.values())))}
    with path.open(newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row]
    if rows and not _is_numeric(rows[0]):
        rows = rows[1:]  # a header row
    if not rows:
        raise click.UsageError(f"{path} holds no rows")
    name = _single_input(info, path)
    try:
        return {name: np.asarray([[float(v) for v in row] for row in rows], dtype=dtypes[name])}
    except ValueError as exc:
        raise click.UsageError(f"{path}: {exc}") from None


def _single_input(info: ModelInfo, path: Path) -> str:
    if len(info.inputs) != 1:
        raise click.UsageError(
            f"model '{info.name}' takes {len(info.inputs)} inputs; give {path.name} as JSON {{input name: rows}}"
        )
    return info.inputs[0].name


def _is_numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _call(method: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return method(*args, **kwargs)
    except VigilError as exc:
        raise click.ClickException(str(exc)) from None


def _prediction_json(result: Prediction) -> dict[str, Any]:
    out: dict[str, Any] = {
        "request_id": result.request_id,
        "model_name": result.model_name,
        "model_version": result.model_version,
        "outputs": {name: _jsonable(array) for name, array in result.outputs.items()},
    }
    if result.labels:
        out["predictions"] = [
            {"label": label, "probability": float(p)}
            for label, p in zip(result.labels, result.probabilities, strict=True)
        ]
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dict__"):
        return _jsonable(value.__dict__)
    return value


# Commands kept in their own modules register on `main` when imported, after it is complete.
from clients import rollout_cli  # noqa: E402, F401
