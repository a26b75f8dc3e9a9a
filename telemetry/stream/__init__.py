"""The Telemetry stream: one snapshot of the server per tick, turned into frames shared by every subscriber, with
a bounded queue per subscriber; and the stream's own errors, which the server maps to status codes. May import
`metrics`, `export.wire` and `vigil.protos`.
"""
