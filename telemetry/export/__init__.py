"""Where telemetry goes: the tracer and meter providers (the only place the OpenTelemetry SDK is wired), OTLP
exporters that report an outage once, the hand-written span encoding and protobuf wire pieces, the Prometheus
`/metrics` view and several processes' pages merged into one, JSON log lines, and daemon threads for flushes that
must not hold the exit. May import `calls` and `metrics`.
"""
