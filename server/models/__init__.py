"""The model repository: finding models and versions on disk, their per-model `config.toml` (with its `[rollout]`
table), ONNX Runtime sessions and their signatures, pinned host buffers for the GPU path, each version's state and
draining, watching the repository folder, the bundled default model, and building a version's reference profile by
running it on a data file (`vigil profile`). May import `batching`, `errors`, `vigil.telemetry.calls`, the
reference profile of `vigil.telemetry.quality`, NVML's GPU count (`vigil.telemetry.metrics.gpu`) and
`vigil.protos.tensors`.
"""
