"""The report's history: per-minute buckets of every model version, the alerts fired and uptime, retained for
days; its schedule, its state file, and a period summed up for the report. May import `metrics`, `quality`,
`stream` and `export`.
"""
