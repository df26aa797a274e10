"""Job definitions and the scheduler daemon."""
