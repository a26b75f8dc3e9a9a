"""The `vigil` command group: the connection options every command shares, and the helpers commands use."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
import numpy as np

from vigil.clients.base import DEFAULT_TARGET
from vigil.clients.channel import TLS
from vigil.clients.client import Client
from vigil.clients.errors import Unavailable, VigilError

COMMAND_ENTRY_POINTS = "vigil.commands"
"""Entry-point group through which other packages add commands (the server adds `serve` and `profile`): loaded
only when such a command runs or help lists it, so client commands never import the server."""


class CommandGroup(click.Group):
    """The `vigil` group: its own commands, plus those other installed packages register as entry points."""

    def _plugins(self) -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points(group=COMMAND_ENTRY_POINTS)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugins()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and (plugin := self._plugins().get(cmd_name)) is not None:
            loaded = plugin.load()
            command = loaded if isinstance(loaded, click.Command) else None
        return command

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


def client_for(target: str, timeout: float | None) -> Client:
    connection = click.get_current_context().find_object(Connection) or Connection()
    return connection.client(target, timeout)


path_type = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group(cls=CommandGroup)
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


def call(method: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return method(*args, **kwargs)
    except VigilError as exc:
        raise click.ClickException(explained(exc)) from None


def explained(error: VigilError) -> str:
    """The error's text, with what to do when no server answers at the target."""
    target = click.get_current_context().params.get("target")
    if isinstance(error, Unavailable) and target and any(
            sign in error.message for sign in ("failed to connect", "Connection refused", "Socket closed")):
        return (f"{error}\nno Vigil server answers at {target}: start one with `vigil serve`, or point --target "
                "(or VIGIL_TARGET) at one")
    return str(error)


def jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "__dict__"):
        return jsonable(value.__dict__)
    return value


