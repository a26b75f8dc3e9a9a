"""`vigil models`, `load`, `unload`, `metadata` and `health`: the server's models and its health."""

from __future__ import annotations

import json
import sys

import click

from vigil.clients.cli.group import call, client_for, jsonable, main, target_option, timeout_option
from vigil.clients.types import ModelSummary


@main.command()
@target_option
@timeout_option
def models(target: str, timeout: float) -> None:
    """List the server's models and the state of each version."""
    with client_for(target, timeout) as client:
        summaries = call(client.list_models)
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
    with client_for(target, timeout) as client:
        summary = call(client.load_model, model)
    _echo_model(summary)


@main.command()
@click.argument("model")
@target_option
@load_timeout_option
def unload(model: str, target: str, timeout: float) -> None:
    """Unload every version of MODEL once its queued requests have finished."""
    with client_for(target, timeout) as client:
        summary = call(client.unload_model, model)
    _echo_model(summary)


@main.command()
@click.argument("model")
@click.option("--version", type=int, default=0, help="Version (default: the default version).")
@target_option
@timeout_option
def metadata(model: str, version: int, target: str, timeout: float) -> None:
    """Show a model version's inputs, outputs and configuration as JSON."""
    with client_for(target, timeout) as client:
        info = call(client.model_metadata, model, version)
    click.echo(json.dumps(jsonable(info.__dict__), indent=2))




@main.command()
@click.option("--service", default="", help="Health service name ('' for the server, model/NAME for a model).")
@target_option
@timeout_option
def health(service: str, target: str, timeout: float) -> None:
    """Print the server's (or a service's) health; exit 0 only when SERVING."""
    with client_for(target, timeout) as client:
        status = call(client.health, service)
    click.echo(status)
    sys.exit(0 if status == "SERVING" else 1)


