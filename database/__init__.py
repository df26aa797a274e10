"""Engine and pool, every table (Core tables on one metadata), schema set-up, dialect-specific helpers."""
