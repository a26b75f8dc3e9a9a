"""Rollouts: which version answers a request that names none (weighted, sticky or shadowed), the split in force
per model, and the guard that rolls a worse candidate back or promotes it step by step. The `[rollout]` table
itself is part of a model's configuration (`models.rollout_config`). May import `models`,
`errors`, `vigil.telemetry` and `vigil.protos`.
"""
