"""Criteria that read a filter's feature maps on training images, written here: HRank and group Fisher.

Both start from the transfer baseline, read ``batches`` seeded training batches of 32 (norm statistics frozen),
score every convolution's output channels (ChannelPads excepted) and leave the selection to the shared policy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from etlbench.backbones import ChannelPad
from etlbench.methods.base import Policy, PruneContext, PruningMethod
from etlbench.surgery import ScoreFn
from etlbench.train import TaskModel, iterate_batches, set_train_mode

#: Called per convolution and batch with its output (N x C x H x W) and, with gradients, the loss's gradient of it.
Reader = Callable[[str, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def read_feature_maps(model: TaskModel, ctx: PruneContext, batches: int, read: Reader, gradients: bool
                      ) -> dict[str, torch.Tensor]:
    """``read``'s per-channel values averaged over ``batches`` seeded training batches, per convolution name."""
    data, rng = ctx.data, torch.Generator().manual_seed(ctx.seed)
    x_train, y_train = data.images["train"], data.targets["train"]
    order = torch.randperm(len(x_train), generator=rng).numpy()
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and not isinstance(m, ChannelPad)}
    outputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: outputs.__setitem__(n, out)) for n, m in convs.items()]
    totals: dict[str, torch.Tensor] = {}
    read_batches = 0
    set_train_mode(model, freeze_norm_stats=True)
    try:
        for i, b in enumerate(iterate_batches(x_train, 32, order)):
            if i == batches:
                break
            read_batches += 1
            x = ctx.source.preprocess(torch.from_numpy(x_train[b]), ctx.size)
            with torch.set_grad_enabled(gradients):
                out = model(x)
                for o in outputs.values():
                    if gradients:
                        o.retain_grad()
                if gradients:
                    data.task.loss(out, torch.from_numpy(y_train[b])).backward()
            with torch.no_grad():
                for n, o in outputs.items():
                    value = read(n, o.detach(), o.grad if gradients else None)
                    totals[n] = totals[n] + value if n in totals else value
            outputs.clear()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.eval()
    return {n: t / read_batches for n, t in totals.items()}


class _FeatureMapCriterion(PruningMethod):
    gradients = False

    def __init__(self, batches: int = 4, policy: Policy = "global", max_layer_ratio: float = 0.95):
        super().__init__(policy, max_layer_ratio)
        self.batches = self.at_least_one("batches", batches)

    def read(self, name: str, output: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def importance(self, model: TaskModel, ctx: PruneContext) -> ScoreFn:
        scores = read_feature_maps(model, ctx, self.batches, self.read, self.gradients)
        return lambda name, layer: scores.get(name)


class HRank(_FeatureMapCriterion):
    """The average rank of a filter's feature maps over training images: low-rank maps carry little information
    (Lin, Ji, Wang, Zhang, Zhang, Tian, Shao, "HRank: Filter Pruning using High-Rank Feature Map", CVPR 2020)."""

    name = "hrank"

    def read(self, name: str, output: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return torch.linalg.matrix_rank(output.float()).float().mean(0)


class Fisher(_FeatureMapCriterion):
    """Group Fisher pruning: the loss's second-order change when a channel is masked, ``sum over images of (sum
    over space of activation x gradient)^2``, summed over a coupled group's layers by the shared selection (Liu,
    Zhang, Kuang, Zhou, Xue, Wang, Chen, Yang, Liao, Zhang, "Group Fisher Pruning for Practical Network
    Compression", ICML 2021)."""

    name = "fisher"
    gradients = True

    def read(self, name: str, output: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return (output * grad).sum(dim=(2, 3)).pow(2).sum(0)
