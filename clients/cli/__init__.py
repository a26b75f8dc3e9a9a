"""The `vigil` command line: a thin click layer over the public client.

`group` holds the `vigil` group and what its commands share; each other module holds one command group's commands,
which register on the group when the module is imported. Commands that need the server (`serve`, `profile`) come
from the server package through the `vigil.commands` entry points, so this package imports only the client and
the protos.
"""

from __future__ import annotations

from vigil.clients.cli import erasure, fleet, models, predict, report, rollout, watch
from vigil.clients.cli.group import main

__all__ = ["main"]

# The command modules are imported for their registration on `main`.
del erasure, fleet, models, predict, report, rollout, watch
