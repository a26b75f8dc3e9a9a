"""Vigil: a gRPC model server for ONNX models with streaming telemetry and model-quality monitoring.

The package is one namespace: `vigil.server` (the model server), `vigil.telemetry` (metrics, traces, the
Telemetry stream, quality, alerts and history), `vigil.clients` (the Python client and the `vigil` command line)
and `vigil.protos` (the wire format). The client API is also here at the top:

    >>> from vigil import Client
    >>> with Client("127.0.0.1:8001") as client:
    ...     client.predict("breast_cancer", rows)

This module imports only the client, so `import vigil` stays light.
"""

from __future__ import annotations

from vigil.clients import *  # noqa: F403
from vigil.clients import __all__ as __all__
