"""The HTTP port: Prometheus `/metrics`, `/healthz` and `/readyz`, the dashboard page with its server-sent events
mirror of the Telemetry stream, and the operator report (JSON, and HTML with inline SVG plots). May import
`security` (the access check), `settings`, `vigil.telemetry` and `vigil.protos`; never the request path.
"""
