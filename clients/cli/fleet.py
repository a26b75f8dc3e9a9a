"""`vigil fleet`: the processes that share the server's store, and which of them decides for all."""

from __future__ import annotations

import time

import click

from vigil.clients.cli.group import call, client_for, main, target_option


@main.command()
@target_option
def fleet(target: str) -> None:
    """List the members of the server's fleet (every process sharing its store): id, host, process, worker,
    state, age, and the one that holds the lease (it evaluates alert rules and guards rollouts for all)."""
    with client_for(target, None) as client:
        frame = call(lambda: next(iter(client.telemetry(interval_ms=100, sections=["server"]))))
    now = time.time()
    click.echo(f"{'MEMBER':<34} {'HOST':<20} {'PID':>7} {'WORKER':>6} {'STATE':<12} {'UP':>8} {'SEEN':>6}  ROLE")
    for m in frame.members:
        role = ", ".join(r for r, on in (("leader", m.leader), ("answered", m.local)) if on)
        worker = str(m.worker) if m.worker >= 0 else "-"
        click.echo(f"{m.id:<34} {m.host:<20} {m.pid:>7} {worker:>6} {m.state:<12} "
                   f"{now - m.started_unix:>7.0f}s {now - m.seen_unix:>5.1f}s  {role}")
