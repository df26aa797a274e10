"""The platform's exception tree.

`main.py` turns a `PlatformError` into one `Error: ...` line on stderr and exit code 1.
Messages say what failed and how to fix it; they never contain a password.
"""

from __future__ import annotations


class PlatformError(Exception):
    """Base class of every error the platform reports to a user."""


class ConfigError(PlatformError):
    """A setting is missing, unknown or has a bad value."""


class SourceError(PlatformError):
    """The input extract cannot be read (missing, empty, binary, wrong columns...)."""


class DatabaseError(PlatformError):
    """The warehouse cannot be reached, set up or written."""


class TransientDatabaseError(DatabaseError):
    """A database failure that may succeed when retried (connection refused, lock timeout)."""


class QualityGateError(PlatformError):
    """A blocking data-quality check failed; the run was rolled back."""
