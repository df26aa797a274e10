"""Engine and pool, the Core table of every table (one metadata), schema set-up, dialect-specific helpers."""
