"""Engine and pool, ORM models of every table, schema set-up, dialect-specific helpers."""
