"""The server's `vigil` commands, `serve` and `profile`, added to the client's command line through the
`vigil.commands` entry points (the client package never imports the server)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

ROWS_PER_BIN = 10
"""Reference rows a quantile bin needs for its proportion to be worth comparing with live traffic."""


@click.command()
@click.option("--models", "models_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Model repository folder (default: the bundled breast-cancer model).")
@click.option("--host", help="Address to listen on (default 127.0.0.1; 0.0.0.0 for every interface).")
@click.option("--port", "grpc_port", type=int, help="gRPC port (default 8001; 0 picks a free one).")
@click.option("--http-port", type=int, help="HTTP port for /metrics (default 8002; 0 picks a free one).")
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
@click.option("--workers", help="Worker processes sharing the gRPC port (default 1; `auto`: one per core). "
                                "See docs/scaling.md for sizing.")
def serve(**options: Any) -> None:
    """Serve the models in a repository. Every option also reads its VIGIL_* environment variable."""
    # Imported when the command runs: `vigil --help` loads this module to list the command.
    from vigil.server.__main__ import main as serve_main
    from vigil.server.settings import Settings

    overrides = {key: value for key, value in options.items() if value is not None}
    sys.exit(serve_main(Settings(**overrides)))


@click.command()
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
@click.option("--overwrite", is_flag=True, help="Replace the reference profile shipped with the bundled model.")
def profile(model: str, data_file: Path, models_dir: Path | None, version: int, label_column: str | None,
            bins: int, output: Path | None, overwrite: bool) -> None:
    """Build a model version's reference profile for drift checks, from a data file, on this machine."""
    from rich.progress import Progress

    from vigil.server.models.profile_builder import CHUNK_ROWS, profile_version, read_reference_csv
    from vigil.server.settings import DEFAULT_MODELS_DIR

    try:
        data = read_reference_csv(data_file, label_column)
        if len(data.features) < bins * ROWS_PER_BIN:
            click.echo(f"warning: {len(data.features)} rows for {bins} bins per feature; with fewer than "
                       f"{bins * ROWS_PER_BIN} ({ROWS_PER_BIN} a bin) the bins, and so drift scores, are unsteady",
                       err=True)
        steps = -(-len(data.features) // CHUNK_ROWS) + len(data.names)
        with Progress(transient=True) as bar:
            task = bar.add_task(f"profiling {model}", total=steps)
            built, path = profile_version(models_dir or DEFAULT_MODELS_DIR, model, version, data, bins=bins,
                                          progress=lambda n: bar.advance(task, n))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    target = output or path
    if target.exists() and target.resolve().is_relative_to(DEFAULT_MODELS_DIR.resolve()) and not overwrite:
        raise click.ClickException(f"{target} is the reference profile shipped with the bundled model; write "
                                   "elsewhere with --output, or replace it with --overwrite")
    built.save(target)
    accuracy = f", reference accuracy {built.accuracy:.3f}" if built.accuracy is not None else ""
    click.echo(f"wrote {target}: {built.rows} rows, {len(built.features)} features{accuracy}")


