"""etlbench: a benchmark of filter-pruning methods for efficient transfer learning on face tasks."""

__version__ = "0.1.0"
