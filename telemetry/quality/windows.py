"""Bounded windows of recent rows, filled from finished batches and read by the drift check in another thread."""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt


class RowWindow:
    """The most recent rows (at most `capacity`) of one input, each with its predicted class and arrival time.

    >>> window = RowWindow(capacity=3, features=2)
    >>> window.add(np.ones((5, 2)), np.zeros(5, np.intp), now=0.0)
    >>> len(window.read(now=1.0, max_age=10.0)[0])
    3
    """

    def __init__(self, capacity: int, features: int) -> None:
        if capacity < 1 or features < 1:
            raise ValueError("RowWindow needs capacity and features >= 1")
        self.capacity = capacity
        self._rows = np.zeros((capacity, features), np.float64)
        self._classes = np.zeros(capacity, np.intp)
        self._times = np.full(capacity, -np.inf)
        self._next = 0
        self._lock = threading.Lock()

    def add(self, rows: npt.NDArray[np.floating], classes: npt.NDArray[np.intp], now: float) -> None:
        """Append rows (the newest `capacity` of them when there are more) and their predicted classes."""
        if len(rows) > self.capacity:
            rows, classes = rows[-self.capacity:], classes[-self.capacity:]
        count = len(rows)
        with self._lock:
            start = self._next
            first = min(count, self.capacity - start)
            self._rows[start:start + first] = rows[:first]
            self._classes[start:start + first] = classes[:first]
            self._times[start:start + first] = now
            rest = count - first
            if rest:
                self._rows[:rest] = rows[first:]
                self._classes[:rest] = classes[first:]
                self._times[:rest] = now
            self._next = (start + count) % self.capacity

    def read(self, now: float, max_age: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
        """Copies of the rows and classes no older than `max_age` seconds."""
        with self._lock:
            fresh = self._times >= now - max_age
            return self._rows[fresh].copy(), self._classes[fresh].copy()


class ValueWindow:
    """The most recent values (at most `capacity`) of one number per row, e.g. each prediction's confidence."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("ValueWindow needs capacity >= 1")
        self._values = np.zeros(capacity, np.float64)
        self._filled = 0
        self._next = 0

    def add(self, values: npt.NDArray[np.floating]) -> None:
        capacity = len(self._values)
        values = values[-capacity:]
        count = len(values)
        first = min(count, capacity - self._next)
        self._values[self._next:self._next + first] = values[:first]
        self._values[:count - first] = values[first:]
        self._next = (self._next + count) % capacity
        self._filled = min(self._filled + count, capacity)

    def values(self) -> npt.NDArray[np.float64]:
        return self._values[:self._filled] if self._filled < len(self._values) else self._values
