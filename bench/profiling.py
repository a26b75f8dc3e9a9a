"""A py-spy profile of the server process while a load runs, summarized by function."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any


def summarize_profile(pid: int, run_load: Callable[[], Any], seconds: int = 5, top: int = 25) -> dict[str, Any]:
    """Record `pid` with py-spy while `run_load()` runs. Returns the functions holding most samples themselves
    (`self`; time in C code shows under the Python frame that called it) and Vigil's own functions with
    everything below them (`project`)."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    loader = threading.Thread(target=run_load)
    loader.start()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.txt"
        subprocess.run([py_spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "250", "-f", "raw",
                        "-o", str(raw), "--nonblocking"], check=True, capture_output=True, timeout=seconds + 60)
        loader.join()
        own: Counter[str] = Counter()
        project: Counter[str] = Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            total += n
            frames = stack.split(";")
            own[frames[-1]] += n
            for frame in set(frames):
                if any(f"({package}/" in frame for package in ("server", "protos", "clients", "telemetry")):
                    project[frame] += n
    return {
        "samples": total,
        "self": [(name, n / total * 100) for name, n in own.most_common(top)],
        "project": [(name, n / total * 100) for name, n in project.most_common(top)],
    }
