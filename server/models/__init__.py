"""The model repository: finding models and versions on disk, their per-model `config.toml` (with its `[rollout]`
table), ONNX Runtime sessions and their signatures, pinned host buffers for the GPU path, each version's state and
draining, watching the repository folder, and the bundled default model. May import `batching`, `errors`,
`vigil.telemetry.calls` and `vigil.protos.tensors`.
"""
