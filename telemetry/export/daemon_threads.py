"""Work that must not hold the process's exit: a stuck flush or save runs in a daemon thread, waited for a while."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable


async def in_daemon_thread(work: Callable[[], object], timeout: float, *, name: str = "vigil-background") -> bool:
    """Run `work` in a daemon thread; True if it finished within `timeout` seconds, False if it is still running
    (a thread of the default executor would hold the exit; a daemon thread does not). Its exception, if any, is
    raised here."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[BaseException | None] = loop.create_future()

    def finish(error: BaseException | None) -> None:
        if not done.done():
            done.set_result(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            work()
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
            loop.call_soon_threadsafe(finish, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        error = await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        return False
    if error is not None:
        raise error
    return True
