"""The wiring of model-quality monitoring and alerting: monitors and the alert loop built from settings, kept in
step with the repository's versions and started and stopped with the server; and building a version's reference
profile from a data file (`vigil profile`). May import `models`, `settings`, `vigil.telemetry` and `vigil.protos`.
"""
