"""The compared baselines: magnitude, Taylor and random filter pruning, from the transfer-learned model."""

from __future__ import annotations

import zlib

import torch
from torch import nn

from etlbench.methods.base import Policy, PruneContext, PruningMethod, gradient_pass
from etlbench.surgery import ScoreFn
from etlbench.train import TaskModel


class Magnitude(PruningMethod):
    """L1 norm of each filter (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017)."""

    name = "magnitude"

    def channel_scores(self, name: str, layer: nn.Module) -> torch.Tensor:
        return layer.weight.detach().abs().flatten(1).sum(1)


class Taylor(PruningMethod):
    """First-order Taylor importance ``(sum over a filter of grad * weight)^2``, gradients of the task loss
    accumulated over ``batches`` training batches (Molchanov et al., "Importance Estimation for Neural Network
    Pruning", CVPR 2019; "Pruning CNNs for Resource Efficient Inference", ICLR 2017)."""

    name = "taylor"

    def __init__(self, batches: int = 16, policy: Policy = "global", max_layer_ratio: float = 0.95):
        super().__init__(policy, max_layer_ratio)
        self.batches = self.at_least_one("batches", batches)

    def importance(self, model: TaskModel, ctx: PruneContext) -> ScoreFn:
        with gradient_pass(model):
            for x, y in ctx.training_batches(32 * self.batches):
                ctx.data.task.loss(model(x), y).backward()
            grads = {n: m.weight.grad.detach().clone() for n, m in model.named_modules()
                     if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.grad is not None}

        def scores(name: str, layer: nn.Module) -> torch.Tensor | None:
            grad = grads.get(name)
            return None if grad is None else (grad * layer.weight.detach()).flatten(1).sum(1).pow(2)

        return scores


class Random(PruningMethod):
    """Random filter scores (seeded per layer and trial seed): the floor any criterion must beat."""

    name = "random"

    def importance(self, model: TaskModel, ctx: PruneContext) -> ScoreFn:
        def scores(name: str, layer: nn.Module) -> torch.Tensor:
            rng = torch.Generator().manual_seed(zlib.crc32(f"{ctx.seed}:{name}".encode()))
            return torch.rand(layer.weight.shape[0], generator=rng)

        return scores
