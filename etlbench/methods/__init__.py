"""Pruning methods, in :data:`etlbench.registry.METHODS` (the built-ins are declared in :mod:`etlbench.plugins`;
third-party: ``register_method`` or the entry-point group ``etlbench.methods``)."""

from etlbench.errors import ConfigError
from etlbench.methods.base import PruneContext, PruningMethod, create_method, full_parameters, method_parameters
from etlbench.registry import METHODS, register_method

__all__ = ["METHODS", "ConfigError", "PruneContext", "PruningMethod", "create_method", "full_parameters",
           "method_parameters", "register_method"]
