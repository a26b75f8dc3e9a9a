"""`vigil watch`: the live dashboard of the Telemetry stream in the terminal."""

from __future__ import annotations

import click

from vigil.clients.cli.group import client_for, main, target_option
from vigil.clients.errors import Unavailable, VigilError


@main.command()
@click.option("--model", "models", multiple=True, help="Model to show (repeat for several; default all).")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between frames (0.1 to 60).")
@click.option("--frames", type=int, default=0, help="Stop after this many frames (default: until interrupted).")
@click.option("--member", default="", help="Show one member of the server's fleet (an id `vigil fleet` lists); "
                                          "default: the whole fleet, summed.")
@target_option
def watch(models: tuple[str, ...], interval: float, frames: int, member: str, target: str) -> None:
    """A live dashboard of the server's Telemetry stream: per-model throughput and latency with trends, alerts
    and recent events, of every process sharing the server's store (or of one, with --member)."""
    from rich.console import Console

    from vigil.clients.cli.watch_screen import watch as show

    console = Console()
    if not console.is_terminal:  # piped: wide enough for every column
        console = Console(width=160)
    with client_for(target, None) as client:
        try:
            frames_in = client.telemetry(interval_ms=round(interval * 1000), models=models, member=member)
            shown = show(frames_in, console, limit=frames)
            if not frames or shown < frames:  # the server ended the stream: it is shutting down
                raise click.ClickException(f"the server at {target} went away: it ended the stream (shutting down)")
        except Unavailable as exc:
            raise click.ClickException(f"the server at {target} went away or cannot be reached ({exc.message}); "
                                       "start it with `vigil serve`, or point --target at one") from None
        except VigilError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
        except KeyboardInterrupt:
            pass


