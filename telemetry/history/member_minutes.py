"""What one member of the fleet did in one minute (each version's counts, the alerts it recorded, the part of the
minute it was up) and its JSON form, the `data` of that member's row for that minute in the store."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vigil.telemetry.history.minutes import Key, Sparse, VersionMinute, sparse, sparse_items

FORMAT = 1
"""The version of a row's JSON; rows of another are skipped."""


@dataclass(frozen=True)
class FiredAlert:
    """An alert that started firing."""

    name: str
    severity: str
    model: str
    version: str
    summary: str
    fired_unix: float


@dataclass(frozen=True)
class MemberMinute:
    """What one member (one server process) did in one minute."""

    versions: Mapping[Key, VersionMinute] = field(default_factory=dict)
    up: tuple[float, float] | None = None
    """The part of the minute the member was up, (from, to) in Unix seconds; None when it never began."""
    started: float | None = None
    """When the member started."""
    alerts: tuple[FiredAlert, ...] = ()
    """Alerts the member recorded in the minute."""


class RowError(ValueError):
    """A stored minute this server cannot read."""


def histograms_id(duration_bounds: Sequence[float], confidence_bounds: Sequence[float]) -> str:
    """A short fingerprint of the histograms' bucket bounds: a row counted in other buckets (a member running
    another version of Vigil) keeps its counts, but not its latency and confidence distributions."""
    text = json.dumps([list(duration_bounds), list(confidence_bounds)])
    return f"{zlib.crc32(text.encode()):08x}"


def encode(minute: MemberMinute, histograms: str) -> str:
    """The row's JSON (compact; non-finite numbers written as 0)."""
    document: dict[str, Any] = {"v": FORMAT, "h": histograms}
    if minute.up is not None:
        document["up"] = [_finite(minute.up[0]), _finite(minute.up[1])]
    if minute.started is not None:
        document["started"] = _finite(minute.started)
    if minute.versions:
        document["versions"] = [_version_json(model, version, v)
                                for (model, version), v in sorted(minute.versions.items())]
    if minute.alerts:
        document["alerts"] = [{"name": a.name, "severity": a.severity, "model": a.model, "version": a.version,
                               "summary": a.summary, "fired_unix": _finite(a.fired_unix)} for a in minute.alerts]
    return json.dumps(document, separators=(",", ":"), allow_nan=False)


def decode(text: str, histograms: str) -> MemberMinute:
    """A row's minute; RowError when it is not one this server can read. Histograms counted in other buckets than
    `histograms` names are left out."""
    try:
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("v") != FORMAT:
            raise RowError(f"not a report minute of format {FORMAT}")
        same = document.get("h") == histograms
        versions: dict[Key, VersionMinute] = {}
        for entry in _list(document, "versions"):
            key, minute = _version(entry, keep_histograms=same)
            versions[key] = minute
        up = document.get("up")
        if up is not None and (not isinstance(up, list) or len(up) != 2):
            raise RowError(f"up must be [from, to], not {up!r}")
        started = document.get("started")
        alerts = tuple(FiredAlert(_str(a, "name"), _str(a, "severity"), _str(a, "model"), _str(a, "version"),
                                  _str(a, "summary"), _number(a["fired_unix"])) for a in _list(document, "alerts"))
        return MemberMinute(versions, None if up is None else (_number(up[0]), _number(up[1])),
                            None if started is None else _number(started), alerts)
    except RowError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise RowError(f"not a readable report minute: {exc}") from None


def _version_json(model: str, version: str, minute: VersionMinute) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "version": version,
                           "calls": [[method, code, n] for (method, code), n in sorted(minute.calls.items())]}
    if minute.duration:
        out["duration"] = list(sparse_items(minute.duration))
        out["duration_sum"] = _finite(minute.duration_sum)
    for name in ("rows", "feedback", "correct"):
        if getattr(minute, name):
            out[name] = getattr(minute, name)
    if minute.predictions:
        out["predictions"] = dict(minute.predictions)
    if minute.confidence:
        out["confidence"] = list(sparse_items(minute.confidence))
        out["confidence_sum"] = _finite(minute.confidence_sum)
    if minute.drift_status >= 0:
        out["drift_status"], out["drift_psi"] = minute.drift_status, _finite(minute.drift_psi)
    return out


def _version(entry: Any, *, keep_histograms: bool) -> tuple[Key, VersionMinute]:
    calls = {(str(method), str(code)): _count(n) for method, code, n in entry.get("calls", [])}
    duration, confidence = _sparse(entry.get("duration", [])), _sparse(entry.get("confidence", []))
    duration_sum, confidence_sum = _float(entry, "duration_sum"), _float(entry, "confidence_sum")
    if not keep_histograms:
        duration, duration_sum, confidence, confidence_sum = (), 0.0, (), 0.0
    minute = VersionMinute(
        calls, duration, duration_sum, _count(entry.get("rows", 0)),
        {str(k): _count(n) for k, n in entry.get("predictions", {}).items()}, confidence, confidence_sum,
        _count(entry.get("feedback", 0)), _count(entry.get("correct", 0)), int(entry.get("drift_status", -1)),
        _float(entry, "drift_psi"))
    return (_str(entry, "model"), _str(entry, "version")), minute


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _sparse(pairs: Any) -> Sparse:
    counts: dict[int, int] = {}
    for i, n in pairs:
        counts[_count(i)] = counts.get(_count(i), 0) + _count(n)
    return sparse(counts)


def _list(document: dict[str, Any], name: str) -> list[Any]:
    value = document.get(name, [])
    if not isinstance(value, list):
        raise RowError(f"{name} must be a list")
    return value


def _str(entry: Any, name: str) -> str:
    value = entry[name]
    if not isinstance(value, str):
        raise RowError(f"{name} must be a string, not {value!r}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RowError(f"{value!r} is not a finite number")
    return float(value)


def _float(entry: Any, name: str) -> float:
    return _number(entry[name]) if name in entry else 0.0


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RowError(f"{value!r} is not a count")
    return value
