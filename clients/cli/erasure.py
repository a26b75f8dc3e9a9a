"""`vigil forget`: erase a subject's predictions and outcomes from the server's prediction log."""

from __future__ import annotations

import click

from vigil.clients.cli.group import call, client_for, main, target_option, timeout_option


@main.command()
@click.option("--subject", "subject_id", required=True,
              help="The subject id as predictions or feedback were sent with it (matched by its keyed hash).")
@target_option
@timeout_option
def forget(subject_id: str, target: str, timeout: float) -> None:
    """Erase every logged prediction and outcome of a subject (a right-to-erasure request). The server writes an
    audit line; where it keeps admin calls to admins, this is one."""
    with client_for(target, timeout) as client:
        erased = call(client.forget, subject_id)
    click.echo(f"erased {erased.predictions} prediction(s), {erased.outcomes} of them with outcomes")
