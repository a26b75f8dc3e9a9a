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
    """Record `pid` with py-spy while `run_load()` runs; the functions holding most samples (inclusive)."""
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
        inclusive: Counter[str] = Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            total += n
            for frame in set(stack.split(";")):
                inclusive[frame.split(" (")[0] + " (" + frame.split(" (")[-1] if " (" in frame else frame] += n
    return {"samples": total, "inclusive": [(name, n / total * 100) for name, n in inclusive.most_common(top)]}
