"""Every table of the warehouse on one metadata.

The tables live in this package (`models`, `aggregates`, `quality_models`, `scheduler_models`);
importing this module registers them all on the shared `METADATA`, so set-up, the catalog and the
Citus placements see every table without knowing which module defines it.
"""

from __future__ import annotations

from database import aggregates, quality_models, scheduler_models  # noqa: F401  (each registers its tables)
from database.models import METADATA

__all__ = ["METADATA"]
