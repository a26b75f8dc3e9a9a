"""`python -m vigil.server`: serve with settings from `VIGIL_*` environment variables."""

from __future__ import annotations

import asyncio
import sys

from vigil.server.app import serve
from vigil.server.logs import configure_logging
from vigil.server.settings import Settings


def main(settings: Settings | None = None) -> int:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.telemetry.log_format)
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
