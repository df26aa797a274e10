"""Query cache, partitions, indexes, query analysis, aggregates."""
