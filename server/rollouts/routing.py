"""Which version answers a request that names none: a weighted pick, random or by a sticky key's hash.

The versions take consecutive ranges of [0, 1): canaries first (in version order), the stable version last. A
request's point in [0, 1) is random, or the keyed hash of its sticky key, so one key always lands on the same
version while the weights stay, and as a canary's weight grows the keys it had stay with it.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Metadata = Callable[[], Iterable[tuple[str, Any]] | None]
"""A call's request metadata, read only when a sticky split asks (e.g. `context.invocation_metadata`)."""

_SCALE = float(1 << 64)


@dataclass(frozen=True)
class Split:
    """An immutable routing plan; a new plan replaces the old one in one assignment.

    >>> split = Split.of("m", {1: 90.0, 2: 10.0}, stable=1)
    >>> split.choose("patient-17") == split.choose("patient-17")
    True
    """

    model: str
    versions: tuple[int, ...]
    upper: tuple[float, ...]
    """Upper end of each version's range, cumulative, the last exactly 1."""
    shadow: int = 0
    sticky_key: str = ""

    @classmethod
    def of(cls, model: str, shares: Mapping[int, float], *, stable: int, shadow: int = 0,
           sticky_key: str = "") -> Split:
        """A plan from shares (any positive scale; versions with 0 get nothing)."""
        ordered = [v for v in sorted(shares) if v != stable and shares[v] > 0] + [stable]
        total = sum(shares[v] for v in ordered)
        if total <= 0 or shares.get(stable, 0) <= 0:
            raise ValueError("a split needs the stable version to have a share above 0")
        upper: list[float] = []
        running = 0.0
        for version in ordered:
            running += shares[version] / total
            upper.append(running)
        upper[-1] = 1.0
        return cls(model, tuple(ordered), tuple(upper), shadow, sticky_key)

    def point(self, key: str | None) -> float:
        """Where a request falls in [0, 1): the hash of its key (salted with the model name), or random."""
        if not key:
            return random.random()
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, salt=self.model.encode("utf-8")[:16]).digest()
        return int.from_bytes(digest, "big") / _SCALE

    def choose(self, key: str | None = None) -> int:
        """The version for a request with this sticky key value (None or empty: random)."""
        index = bisect.bisect_right(self.upper, self.point(key))
        return self.versions[min(index, len(self.versions) - 1)]

    def key_of(self, metadata: Metadata | None) -> str | None:
        """The sticky key's value in a request's metadata, or None."""
        if not self.sticky_key or metadata is None:
            return None
        for key, value in metadata() or ():
            if key == self.sticky_key:
                return value if isinstance(value, str) else None
        return None
