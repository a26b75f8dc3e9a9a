"""`vigil report`: the server's report over a period, saved as HTML or JSON."""

from __future__ import annotations

from pathlib import Path

import click

from vigil.clients.cli.group import Connection, main


@main.command()
@click.option("--since", default="24h", show_default=True,
              help="The period to report on, back from now: e.g. 30m, 24h, 7d (at most the server's retention).")
@click.option("--model", help="Only this model (default: every model).")
@click.option("--member", help="Only this member of the server's fleet (an id `vigil fleet` lists; default: the whole "
                               "fleet).")
@click.option("--http", "http_target", default="127.0.0.1:8002", show_default=True, envvar="VIGIL_HTTP_TARGET",
              help="The server's HTTP port, host:port.")
@click.option("--json", "as_json", is_flag=True, help="Save the report as JSON instead of HTML.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to save it (default vigil-report.html, or .json with --json).")
def report(since: str, model: str | None, member: str | None, http_target: str, as_json: bool,
           output: Path | None) -> None:
    """Save the server's report over a period: requests, errors by code, latency percentiles, throughput, uptime,
    per-model and per-version usage, class mix, accuracy, drift and alerts fired, with plots; and the drift and
    accuracy detail of every monitored classifier (every drift test, a reference-vs-live plot per feature). Of every
    process sharing the server's store, or of one with --member."""
    import urllib.error
    import urllib.parse
    import urllib.request

    connection = click.get_current_context().find_object(Connection) or Connection()
    fields = {"since": since, **({"model": model} if model else {}), **({"member": member} if member else {})}
    query = f"?{urllib.parse.urlencode(fields)}"
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


