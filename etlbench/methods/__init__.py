"""Pruning methods, registered in :data:`etlbench.registry.METHODS` (third-party: entry-point group
``etlbench.methods``)."""

from etlbench.errors import ConfigError
from etlbench.methods import baselines, etl  # noqa: F401  (register the built-in methods)
from etlbench.methods.base import PruneContext, PruningMethod, create_method, full_parameters, method_parameters
from etlbench.registry import METHODS, register_method

__all__ = ["METHODS", "ConfigError", "PruneContext", "PruningMethod", "create_method", "full_parameters",
           "method_parameters", "register_method"]
