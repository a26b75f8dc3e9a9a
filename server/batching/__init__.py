"""Dynamic batching: the per-version queue that merges concurrent requests into ONNX Runtime runs, the worker
threads that run them, the batch records the telemetry hook receives, and the cumulative per-version statistics.
Runs anything with a `run` method (the `Runner` protocol), so it imports nothing from `models`; only `errors` and
`vigil.protos.tensors`.
"""
