"""Telemetry on the request path: the call context the request path fills in, the one call wrapper (span and
per-call metrics), server spans and their stages, and the batch and shadow hooks. Imports only `metrics` and the
OpenTelemetry API.
"""
