"""Catalog, lineage, data versions, exports, generated docs."""
