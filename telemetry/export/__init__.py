"""Where telemetry goes: the tracer and meter providers (the only place the OpenTelemetry SDK is wired), OTLP
exporters that report an outage once, the span exporter process and the records it is handed, protobuf wire
pieces, the Prometheus `/metrics` view and several processes' pages merged into one, JSON log lines, and daemon
threads for flushes that must not hold the exit. May import `calls` and `metrics`.
"""
