"""Named experiment specs shipped with etlbench (see etlbench.config)."""
