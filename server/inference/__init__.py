"""The request path once protobuf is left behind: the request and result values, validation against a model's
signature and the server's limits, the `DataPlane` every protocol shares, and ground-truth feedback. May import
`models`, `batching`, `rollouts`, `errors`, `vigil.telemetry` and `vigil.protos.tensors`; never `api`.
"""
