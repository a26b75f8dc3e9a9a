"""What Vigil tells its operators: metrics, traces, the Telemetry stream, model quality, alerts and the report's
history. Components take plain arguments and raise their own errors, which the server translates; nothing here
imports `vigil.server` or `vigil.clients`, and telemetry never makes a request fail.

`calls` is what sits on the request path (the call wrapper, spans, the batch and shadow hooks), `metrics` the
instruments and their aggregates, `export` the OpenTelemetry providers, exporters and `/metrics`, `stream` the
Telemetry stream's hub and frames, `quality` the classifier monitor, feedback, calibration and drift, `alerts` the
rules, their engine, SLOs and Alertmanager, and `history` the report's per-minute record.
"""
