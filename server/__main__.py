"""`python -m vigil.server`: serve with settings from `VIGIL_*` environment variables."""

from __future__ import annotations

import asyncio
import logging
import sys

from vigil.server.app import serve
from vigil.server.logs import configure_logging, route_standard_error
from vigil.server.settings import Settings
from vigil.server.store.records import StoreError
from vigil.server.workers import supervise


def main(settings: Settings | None = None) -> int:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.telemetry.log_format)
    try:
        if settings.worker_count > 1:  # each worker routes its own standard error; the supervisor runs no native code
            return asyncio.run(supervise(settings))
        route_standard_error()
        return asyncio.run(serve(settings))
    except StoreError as exc:  # a store that cannot be opened: one line saying why, not a traceback
        logging.getLogger("vigil.server").critical("cannot start: %s", exc)
        return 2
    except Exception:  # e.g. a port in use: one record with the whole traceback
        logging.getLogger("vigil.server").exception("cannot start")
        return 1


if __name__ == "__main__":
    sys.exit(main())
