"""Pruning methods, registered in :data:`etlbench.registry.METHODS` (the plugin API comes with issue 3)."""
