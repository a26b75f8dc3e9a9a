"""The gRPC services: the native `vigil.v1.Inference` servicer, the Open Inference Protocol (KServe v2) servicer,
health, their protobuf ↔ domain conversion (protobuf stops here), what the Telemetry stream reads from the server,
and how handlers are wrapped as services register. Servicers are thin: convert, delegate to `inference`, convert
back. May import `inference`, `models`, `batching`, `rollouts`, `errors`, `vigil.telemetry` and `vigil.protos`.
"""
