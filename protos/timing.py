"""Per-request server timing carried in trailing metadata, in the style of HTTP's `Server-Timing` header."""

from __future__ import annotations

from collections.abc import Mapping

SERVER_TIMING_KEY = "vigil-server-timing"
"""Trailing-metadata key; its value reads `queue;dur=0.000120, compute;dur=0.000350, batch;size=8`."""


def format_timing(seconds: Mapping[str, float], batch_size: int | None = None) -> str:
    """Stage durations in seconds (and optionally the batch size) as one metadata value."""
    parts = [f"{stage};dur={value:.6f}" for stage, value in seconds.items()]
    if batch_size is not None:
        parts.append(f"batch;size={batch_size}")
    return ", ".join(parts)


def parse_timing(value: str) -> dict[str, float]:
    """The stages of a metadata value, as {stage: seconds}, plus {"batch_size": n} when present."""
    timing: dict[str, float] = {}
    for entry in value.split(","):
        name, _, rest = entry.strip().partition(";")
        key, _, number = rest.partition("=")
        try:
            parsed = float(number)
        except ValueError:
            continue
        if key == "dur":
            timing[name] = parsed
        elif key == "size" and name == "batch":
            timing["batch_size"] = parsed
    return timing
