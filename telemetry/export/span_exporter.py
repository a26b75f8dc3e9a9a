"""The span exporter process: `python -m vigil.telemetry.export.span_exporter`, started by the server.

It reads span records from standard input (see `span_records`), turns them into the SDK's spans, and exports
them over OTLP with the SDK's own exporter and batch span processors, so building, encoding and sending spans
never holds the serving process's interpreter lock. Everything is configured by the standard `OTEL_*`
variables it inherits (endpoint, protocol, headers, certificates, timeouts, `OTEL_BSP_*`). Spans of sampled calls
and kept spans (failed or slow calls) have a queue each, so kept spans never wait behind sampled ones.
When standard input closes it flushes what it holds (bounded by the exporter's timeout) and exits.
"""

from __future__ import annotations

import json
import logging
import marshal
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from vigil.telemetry.export.exporters import OutageReportingSpanExporter, quiet_sdk_exporter_logs
from vigil.telemetry.export.providers import otlp_protocol
from vigil.telemetry.export.span_records import FRAME_HEADER, HELLO, KEPT, MAX_FRAME, SAMPLED, to_span

logger = logging.getLogger("vigil.telemetry.export.span_exporter")


def read_frames(stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    """Yield the `(kind, payload)` of each frame until the stream ends (or breaks off mid-frame)."""
    while True:
        header = stream.read(FRAME_HEADER.size)
        if len(header) < FRAME_HEADER.size:
            return
        (size,) = FRAME_HEADER.unpack(header)
        if size > MAX_FRAME:
            raise ValueError(f"a frame of {size} bytes is over the limit; the stream is corrupt")
        data = stream.read(size)
        if len(data) < size:
            return
        yield marshal.loads(data)


def otlp_exporter() -> SpanExporter:
    """The SDK's OTLP span exporter for the configured protocol (the server starts this process only for one the
    SDK has an exporter for: gRPC, or `http/protobuf`)."""
    if otlp_protocol("traces") == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

        return HttpSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class _JsonLines(logging.Formatter):
    """One JSON object a line: the server relays each record through its own logging."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return json.dumps({"level": record.levelname, "logger": record.name, "message": message})


def main() -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    quiet_sdk_exporter_logs()
    exporter = OutageReportingSpanExporter(otlp_exporter())
    queues = {SAMPLED: BatchSpanProcessor(exporter), KEPT: BatchSpanProcessor(exporter)}
    resource = Resource.create({})
    scope = InstrumentationScope("vigil")
    try:
        for kind, payload in read_frames(sys.stdin.buffer):
            if kind == HELLO:
                resource = Resource(payload)
                continue
            queue = queues.get(kind)
            if queue is None:
                continue
            for values in payload:
                queue.on_end(to_span(values, resource, scope))
    except Exception:
        logger.exception("span records could not be read; the exporter stops")
    finally:
        for queue in queues.values():  # every queue flushes before any stops: they share the exporter
            queue.force_flush()
        for queue in queues.values():
            queue.shutdown()  # type: ignore[no-untyped-call]
    return 0


if __name__ == "__main__":
    sys.exit(main())
