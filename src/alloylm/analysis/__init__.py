"""Analysis of results: merge synergy (when a merge beats its parents)."""
