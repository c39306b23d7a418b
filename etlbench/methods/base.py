"""The pruning-method API: a method says where it starts and scores the output channels of each layer.

The rest is shared by every method, so the comparison is fair (Blalock et al., MLSys 2020): the same
selection policy (:func:`etlbench.surgery.prune_to_budget`), the same budget tolerance, the same recovery.
Writing a criterion takes a few lines (cf. Torch-Pruning's ``Importance``)::

    from etlbench.methods import PruningMethod, register_method

    @register_method("l2")
    class L2Norm(PruningMethod):
        '''L2 norm of each filter (a variant of Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017).'''

        def channel_scores(self, name, layer):
            return layer.weight.detach().flatten(1).norm(dim=1)
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from etlbench.backbones import SourceNetwork
from etlbench.data import TaskData
from etlbench.registry import METHODS
from etlbench.surgery import Budget, PruneOutcome, prune_to_budget
from etlbench.train import TaskModel, build_task_model

Policy = Literal["global", "uniform"]


class ConfigError(ValueError):
    """A parameter that a plugin does not take, or a value it cannot use; names the plugin and the key."""


@dataclass
class PruneContext:
    """What a method may read: the task data (train/val only are used), the source network, the input size,
    the seed, the unpruned transfer baseline's size, and a provider of the transfer-learned model."""

    data: TaskData
    source: SourceNetwork
    size: tuple[int, int]
    seed: int
    baseline_params: int
    baseline_macs: int
    transfer_model: Callable[[], TaskModel]
    cache_dir: str | None = None
    log: dict[str, Any] = field(default_factory=dict)


class PruningMethod(ABC):
    """Base class of pruning methods. Subclasses implement :meth:`channel_scores` (higher = keep)."""

    name: ClassVar[str] = ""
    starts_from: ClassVar[Literal["transfer", "source"]] = "transfer"

    def __init__(self, policy: Policy = "global", max_layer_ratio: float = 0.95):
        if policy not in ("global", "uniform"):
            raise ConfigError(f"method {self.name!r}: policy must be 'global' or 'uniform', got {policy!r}")
        if not 0 < max_layer_ratio < 1:
            raise ConfigError(f"method {self.name!r}: max_layer_ratio must be in (0, 1), got {max_layer_ratio}")
        self.policy = policy
        self.max_layer_ratio = max_layer_ratio
        self.fields: dict[str, Any] = {}  # method-specific result columns (e.g. cut_layer)

    def start_model(self, ctx: PruneContext) -> TaskModel:
        """The model pruning starts from: the transfer baseline (default) or the source network with a head."""
        if self.starts_from == "transfer":
            return ctx.transfer_model()
        return build_task_model(ctx.source, ctx.data.task, ctx.data.targets["train"], seed=ctx.seed)

    def shared_stage(self, ctx: PruneContext) -> None:  # noqa: B027  (optional hook)
        """Work shared by all trials of this method on one task and seed (e.g. ETL's probes): the runner calls it
        once before them; it should cache its result under ``ctx.cache_dir`` for the trials to read."""

    def prepare(self, model: TaskModel, ctx: PruneContext) -> None:  # noqa: B027  (optional hook)
        """Called once before scoring (e.g. to accumulate gradients)."""

    @abstractmethod
    def channel_scores(self, name: str, layer: nn.Module) -> torch.Tensor | None:
        """Importance of each output channel of ``layer`` (module ``name`` of the model); ``None``: no opinion."""

    def prune(self, model: TaskModel, ctx: PruneContext, budget: Budget) -> PruneOutcome:
        self.prepare(model, ctx)
        baseline = ctx.baseline_params if budget.of == "params" else ctx.baseline_macs
        return prune_to_budget(model, self.channel_scores, budget, baseline, ctx.size, policy=self.policy,
                               max_layer_ratio=self.max_layer_ratio)


def method_parameters(cls: type[PruningMethod]) -> dict[str, inspect.Parameter]:
    """The keyword parameters a method takes (its own and its bases')."""
    params: dict[str, inspect.Parameter] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass) and issubclass(klass, PruningMethod):
            for p in list(inspect.signature(klass.__init__).parameters.values())[1:]:
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    params[p.name] = p
    return params


def create_method(name: str, **params: Any) -> PruningMethod:
    """A configured method; a parameter it does not take is an error naming the method and the key."""
    cls = METHODS.get(name)
    known = method_parameters(cls)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"method {name!r} does not take parameter(s) {unknown}; it takes: {sorted(known) or 'none'}")
    method = cls(**params)
    method.name = name
    return method
