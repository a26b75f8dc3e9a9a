"""Rollouts: which version answers a request that names none (weighted, sticky or shadowed), the split in force
per model, and the guard that rolls a worse candidate back or promotes it step by step. May import `models`,
`errors`, `vigil.telemetry` and `vigil.protos`.
"""
