"""The reference pages `docs/client.md` and `docs/cli.md`, written from the code itself (signatures, docstrings,
click's options), so they cannot drift from it; a test checks the committed pages against what this writes.

    python -m vigil.clients.reference --out docs
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from pathlib import Path
from typing import Any

import click

import vigil.clients as api
from vigil.clients.cli import main as cli_main

CLIENT_INTRO = """\
# The Python client

`Client` (blocking) and `AsyncClient` (asyncio) call one Vigil server over its native gRPC API. Results are plain
dataclasses with numpy arrays, never protobuf messages; errors are exceptions named for what went wrong. Both are
context managers:

```python
from vigil import Client

with Client("127.0.0.1:8001", timeout=10) as client:
    result = client.predict("breast_cancer", rows)       # rows: float32 [n, 30]
    print(result.labels, result.probabilities, result.request_id)
```

`AsyncClient` has the same methods, awaited (`telemetry` is an async iterator). This page is written from the code
by `python -m vigil.clients.reference`.
"""

CLI_INTRO = """\
# The `vigil` command line

`vigil` is installed with the package. The connection options go before the command
(`vigil --ca-file ca.crt --token T models`); every command's own options follow it. `serve` and `profile` run on
this machine; the others call a server (`--target`, or `VIGIL_TARGET`). This page is written from the commands
themselves by `python -m vigil.clients.reference`.
"""


def _first_paragraph(text: str | None) -> str:
    paragraphs = inspect.cleandoc(text or "").split("\n\n")
    return " ".join(paragraphs[0].split()) if paragraphs and paragraphs[0] else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _signature(function: Any, *, skip_self: bool = True) -> str:
    """`(name: type = default, ...) -> type`, annotations as written in the source."""
    parts, starred = [], False
    for name, p in inspect.signature(function).parameters.items():
        if skip_self and name == "self":
            continue
        if p.kind is inspect.Parameter.KEYWORD_ONLY and not starred:
            parts.append("*")
            starred = True
        text = name + (f": {p.annotation}" if p.annotation is not inspect.Parameter.empty else "")
        if p.default is not inspect.Parameter.empty:
            text += f" = {p.default!r}"
        parts.append(text)
    returns = inspect.signature(function).return_annotation
    return f"({', '.join(parts)})" + (f" -> {returns}" if returns not in (inspect.Signature.empty, "None") else "")


def _methods(cls: type) -> list[tuple[str, Any]]:
    return [(name, member) for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") and member.__qualname__.split(".")[0] != "ClientBase"]


def client_reference() -> str:
    """docs/client.md."""
    out = [CLIENT_INTRO]
    for cls in (api.Client, api.AsyncClient):
        out.append(f"## `{cls.__name__}{_signature(cls.__init__)}`\n\n{_first_paragraph(cls.__doc__)}\n")
        out.append("| method | what it does |\n|---|---|")
        for name, method in _methods(cls):
            signature = _signature(method)
            kind = "async " if inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method) else ""
            out.append(f"| `{kind}{name}{_cell(signature)}` | {_cell(_first_paragraph(method.__doc__))} |")
        out.append("")
    out.append("## Results\n")
    for name in sorted(api.__all__):
        value = getattr(api, name)
        if dataclasses.is_dataclass(value):
            fields = ", ".join(f"`{f.name}`" for f in dataclasses.fields(value))
            out.append(f"- `{name}`: {_first_paragraph(value.__doc__)} Fields: {fields}.")
    out.append("\n## Errors\n\nEvery error is a `VigilError` with `code` (the gRPC status) and `message`.\n")
    for name in sorted(api.__all__):
        value = getattr(api, name)
        if isinstance(value, type) and issubclass(value, api.VigilError):
            out.append(f"- `{name}`: {_first_paragraph(value.__doc__)}")
    return "\n".join(out) + "\n"


def _option_row(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return f"| `{param.human_readable_name}` | argument | |"
    assert isinstance(param, click.Option)
    names = ", ".join(f"`{o}`" for o in param.opts)
    default = "" if param.is_flag or param.default in (None, "") or not isinstance(
        param.default, str | int | float) else f" (default `{param.default}`)"
    env = f" Environment: `{param.envvar}`." if isinstance(param.envvar, str) else ""
    return f"| {names} | {_cell(param.help or '')}{default}{env} |"


def cli_reference() -> str:
    """docs/cli.md."""
    out = [CLI_INTRO, "## `vigil`\n", "| option | meaning |\n|---|---|"]
    out += [_option_row(p) for p in cli_main.params]
    context = click.Context(cli_main)
    for name in cli_main.list_commands(context):
        command = cli_main.get_command(context, name)
        assert command is not None
        usage = " ".join(command.collect_usage_pieces(context))
        out.append(f"\n## `vigil {name} {usage}`\n\n{_first_paragraph(command.help)}\n")
        out.append("| option | meaning |\n|---|---|")
        out += [_option_row(p) for p in command.params]
    return "\n".join(out) + "\n"


PAGES = {"client.md": client_reference, "cli.md": cli_reference}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder to write the pages into")
    out = parser.parse_args().out
    for page, write in PAGES.items():
        (out / page).write_text(write(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
