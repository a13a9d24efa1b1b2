"""The model registry's side of a run: ``register`` (versions, aliases), ``promotion`` (the gate),
``lineage`` (the record each version carries) and ``lineage_walk`` (from a version back to the raw bytes)."""
