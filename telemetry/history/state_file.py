"""The report history's state file: JSON, written atomically (a temporary file renamed over the old one), read back
at start so the history survives a restart."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any

from vigil.telemetry.history.minutes import Sparse, VersionMinute, sparse, sparse_items
from vigil.telemetry.history.report_history import FiredAlert, HistoryState

FORMAT = "vigil-report-history"
VERSION = 1
_writing = threading.Lock()  # a periodic save and the one at shutdown may overlap


class StateFileError(ValueError):
    """The state file is not a report history this server can read."""


def save_state(path: Path, state: HistoryState) -> None:
    """Write `state` to `path`: a sibling temporary file, flushed to disk, then renamed over `path`."""
    document = {
        "format": FORMAT, "version": VERSION, "duration_bounds": list(state.duration_bounds),
        "confidence_bounds": list(state.confidence_bounds), "first_seen": state.first_seen,
        "runs": [[s, e] for s, e in state.runs],
        "alerts": [{"name": a.name, "severity": a.severity, "model": a.model, "version": a.version,
                    "summary": a.summary, "fired_unix": a.fired_unix} for a in state.alerts],
        "minutes": [_minute_json(m, model, version, minute) for m, versions in sorted(state.minutes.items())
                    for (model, version), minute in sorted(versions.items())],
    }
    text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    temporary = path.with_name(f".{path.name}.tmp")
    with _writing:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)


def load_state(path: Path) -> HistoryState | None:
    """The history saved in `path`; None when there is no such file, StateFileError when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateFileError(f"cannot read {path}: {exc}") from None
    try:
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise StateFileError(f"{path} is not a Vigil report history")
        if document.get("version") != VERSION:
            raise StateFileError(f"{path} is a report history of version {document.get('version')}, not {VERSION}")
        minutes: dict[int, dict[tuple[str, str], VersionMinute]] = {}
        for entry in _list(document, "minutes"):
            m, key, minute = _minute(entry)
            minutes.setdefault(m, {})[key] = minute
        alerts = tuple(FiredAlert(_str(a, "name"), _str(a, "severity"), _str(a, "model"), _str(a, "version"),
                                  _str(a, "summary"), _float(a, "fired_unix")) for a in _list(document, "alerts"))
        runs = tuple((_number(r[0]), _number(r[1])) for r in _list(document, "runs") if _pair(r))
        first = document.get("first_seen")
        return HistoryState(minutes, alerts, runs, None if first is None else _number(first),
                            tuple(_number(b) for b in _list(document, "duration_bounds")),
                            tuple(_number(b) for b in _list(document, "confidence_bounds")))
    except StateFileError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise StateFileError(f"{path} is not a readable report history: {exc}") from None


def _minute_json(m: int, model: str, version: str, minute: VersionMinute) -> dict[str, Any]:
    out: dict[str, Any] = {"minute": m, "model": model, "version": version,
                           "calls": [[method, code, n] for (method, code), n in sorted(minute.calls.items())]}
    if minute.duration:
        out["duration"] = list(sparse_items(minute.duration))
        out["duration_sum"] = minute.duration_sum
    for name in ("rows", "feedback", "correct"):
        if getattr(minute, name):
            out[name] = getattr(minute, name)
    if minute.predictions:
        out["predictions"] = dict(minute.predictions)
    if minute.confidence:
        out["confidence"] = list(sparse_items(minute.confidence))
        out["confidence_sum"] = minute.confidence_sum
    if minute.drift_status >= 0:
        out["drift_status"], out["drift_psi"] = minute.drift_status, minute.drift_psi
    return out


def _minute(entry: Any) -> tuple[int, tuple[str, str], VersionMinute]:
    calls = {(str(method), str(code)): _count(n) for method, code, n in entry.get("calls", [])}
    minute = VersionMinute(
        calls, _sparse(entry.get("duration", [])), _float(entry, "duration_sum", 0.0),
        _count(entry.get("rows", 0)), {str(k): _count(n) for k, n in entry.get("predictions", {}).items()},
        _sparse(entry.get("confidence", [])), _float(entry, "confidence_sum", 0.0),
        _count(entry.get("feedback", 0)), _count(entry.get("correct", 0)), int(entry.get("drift_status", -1)),
        _float(entry, "drift_psi", 0.0))
    return int(entry["minute"]), (_str(entry, "model"), _str(entry, "version")), minute


def _sparse(pairs: Any) -> Sparse:
    counts: dict[int, int] = {}
    for i, n in pairs:
        counts[_count(i)] = counts.get(_count(i), 0) + _count(n)
    return sparse(counts)


def _list(document: dict[str, Any], name: str) -> list[Any]:
    value = document.get(name, [])
    if not isinstance(value, list):
        raise StateFileError(f"{name} must be a list")
    return value


def _str(entry: Any, name: str) -> str:
    value = entry[name]
    if not isinstance(value, str):
        raise StateFileError(f"{name} must be a string, not {value!r}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StateFileError(f"{value!r} is not a finite number")
    return float(value)


def _float(entry: Any, name: str, default: float | None = None) -> float:
    if default is not None and name not in entry:
        return default
    return _number(entry[name])


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StateFileError(f"{value!r} is not a count")
    return value


def _pair(value: Any) -> bool:
    if not isinstance(value, list) or len(value) != 2:
        raise StateFileError(f"a run must be [start, last seen], not {value!r}")
    return True
