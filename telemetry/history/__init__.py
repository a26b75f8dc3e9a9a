"""The report's history: per-minute buckets of every model version, the alerts fired and when each member of the
fleet was up; this member's minutes, written to the store (through the `MinuteStore` the server passes in) and read
back merged with every other member's, their schedule, and a period summed up for the report. May import
`metrics`, `quality`, `stream` and `export`.
"""
