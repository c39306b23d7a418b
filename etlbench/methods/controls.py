"""Controls that keep a ranking honest: what a criterion must beat to mean anything.

Liu, Sun, Zhou, Huang, Darrell, "Rethinking the Value of Network Pruning", ICLR 2019: a pruned architecture
trained from scratch often matches the pruned weights (``scratch``); a uniform width reduction is the simplest
architecture of a given size (``uniform``). With ``random`` (Le & Hua, ICLR 2021: random pruning under a good
schedule), a criterion's gain is its margin over these under the same budget and recovery.
"""

from __future__ import annotations

import torch
from torch import nn

from etlbench.backbones import ChannelPad
from etlbench.methods.base import PruneContext, PruningMethod, create_method
from etlbench.registry import METHODS
from etlbench.surgery import Budget, PruneOutcome


class Uniform(PruningMethod):
    """Control: every prunable layer thinned by the same fraction, keeping its first channels and their weights
    (no criterion: a uniform width multiplier applied to the transfer baseline)."""

    name = "uniform"

    def __init__(self, max_layer_ratio: float = 0.95):
        super().__init__("uniform", max_layer_ratio)

    def channel_scores(self, name: str, layer: nn.Module) -> torch.Tensor:
        return torch.arange(layer.weight.shape[0], 0, -1, dtype=torch.float32)  # the first channel scores highest


class Scratch(PruningMethod):
    """Control: the architecture method ``of`` produces at the budget (with its default parameters), re-initialised
    (seeded) and trained with the same recovery (Liu et al., "Rethinking the Value of Network Pruning", ICLR 2019)."""

    name = "scratch"

    def __init__(self, of: str = "taylor"):
        super().__init__()
        if of == self.name or of not in METHODS:
            raise self.error("of", f"must name another registered method, got {of!r}")
        self.of = of
        self.starts_from = METHODS.get(of).starts_from  # its start's cost is this trial's too

    def shared_stage(self, ctx: PruneContext) -> None:
        create_method(self.of).shared_stage(ctx)  # e.g. ETL's probes, cached under ETL's own key

    def prune(self, ctx: PruneContext, budget: Budget | None) -> PruneOutcome:
        outcome = create_method(self.of).prune(ctx, budget)
        if outcome.model is not None:
            reinitialise(outcome.model, ctx.seed)
        outcome.fields["architecture_of"] = self.of
        return outcome


def reinitialise(model: nn.Module, seed: int) -> None:
    """Every layer's parameters drawn afresh by its own initialiser (seeded), norms reset; ChannelPads keep their
    fixed weights (they are wiring, not learned)."""
    torch.manual_seed(seed)  # the layers' own initialisers draw from the global generator
    for module in model.modules():
        if isinstance(module, ChannelPad):
            continue
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
