"""The prediction log and what else must outlive a process: every served prediction, its outcome once a label
arrives, and the quality aggregates kept beside them. One interface (`base.Store`), one module per backend
(`sqlite` in WAL mode, `postgres` through a psycopg pool), SQL only in those modules, every schema change a
numbered migration. Rows reach it through `log.PredictionLog`, a writer thread that batches them off the event
loop. May import `vigil.telemetry.quality` (the figures it computes) and nothing else of Vigil's.
"""
