"""Why a Telemetry subscription was refused. The server translates these into its own status codes
(`vigil.server.errors`); telemetry never chooses one.

    StreamError
     ├── InvalidSubscription  an interval or section out of range
     └── TooManySubscribers   the hub has its limit of subscribers
"""

from __future__ import annotations


class StreamError(Exception):
    """A Telemetry subscription could not be opened."""


class InvalidSubscription(StreamError):
    """The subscription asked for an interval or sections the hub does not offer."""


class TooManySubscribers(StreamError):
    """The hub already has its limit of subscribers."""
