"""Torch-Pruning's group criteria, used through Torch-Pruning (``tp.importance``), not rewritten.

Each scores a coupled channel group as Torch-Pruning does (every layer whose channels the group removes, input
sides included; ChannelPads left out, :func:`etlbench.surgery.without_channel_pads`) and normalises the group's
scores (by their mean; LAMP by its own rule), so that the shared selection can rank channels of all groups
together. Where Torch-Pruning's criterion differs from its paper, the docstring says so. The rows record
Torch-Pruning's version (``criterion_library``).
"""

from __future__ import annotations

import importlib.metadata

import torch
import torch_pruning as tp
from torch import nn

from etlbench.methods.base import Policy, PruneContext, PruningMethod
from etlbench.surgery import Budget, PruneOutcome, Scorer
from etlbench.train import TaskModel, set_train_mode


class GroupCriterion(PruningMethod):
    """A Torch-Pruning group importance applied by the shared selection; subclasses name the importance."""

    def criterion(self) -> tp.importance.Importance:
        raise NotImplementedError

    def importance(self, model: TaskModel, ctx: PruneContext) -> Scorer:
        return self.criterion()

    def prune(self, ctx: PruneContext, budget: Budget | None) -> PruneOutcome:
        outcome = super().prune(ctx, budget)
        outcome.fields["criterion_library"] = f"torch-pruning {importlib.metadata.version('torch-pruning')}"
        return outcome


class GroupL2(GroupCriterion):
    """Group L2 norm of every weight a channel owns across its coupled layers (Torch-Pruning's
    ``GroupMagnitudeImportance``; Fang et al., "DepGraph", CVPR 2023; after Li et al., ICLR 2017). As Torch-Pruning
    computes it: each layer's squared L2 norm (batch-norm scales included), averaged over the group's layers."""

    name = "l2"

    def criterion(self) -> tp.importance.Importance:
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")


class FPGM(GroupCriterion):
    """Filter pruning via the geometric median: filters closest to the others are redundant (He et al., CVPR
    2019; Torch-Pruning's ``FPGMImportance``). Torch-Pruning's variant: distances between the filters' element-wise
    ``|w|^2`` vectors (not the raw filters of the paper), averaged with the consuming layers' input slices."""

    name = "fpgm"

    def criterion(self) -> tp.importance.Importance:
        return tp.importance.FPGMImportance(p=2, group_reduction="mean", normalizer="mean")


class LAMP(GroupCriterion):
    """Layer-adaptive magnitude-based pruning: each squared magnitude over the sum of those not smaller in its
    group (Lee et al., ICLR 2021; Torch-Pruning's ``LAMPImportance``)."""

    name = "lamp"

    def criterion(self) -> tp.importance.Importance:
        return tp.importance.LAMPImportance(p=2, group_reduction="mean", normalizer="lamp")


class BNScale(GroupCriterion):
    """The scale (|gamma|) of each channel's batch norm (Liu et al., "Network Slimming", ICCV 2017; Torch-Pruning's
    ``BNScaleImportance``). dlib's norms are folded affine layers over identity statistics; the recovery recipe
    (``norm: recalibrate``) re-expresses them with the train split's statistics before pruning, so a scale is dlib's
    multiplier times the channel's standard deviation. A group without a norm is not scored (kept)."""

    name = "bn-scale"

    def criterion(self) -> tp.importance.Importance:
        return tp.importance.BNScaleImportance(group_reduction="mean", normalizer="mean")


class _WithGradients(tp.importance.Importance):
    """A Torch-Pruning importance that reads ``param.grad``, called with the given tensors there for the call only
    (the model keeps no gradients: its pruned copies and their recovery start clean)."""

    def __init__(self, importance: tp.importance.Importance, grads: dict[nn.Parameter, torch.Tensor]):
        self.importance, self.grads = importance, grads

    def __call__(self, group: tp.Group) -> torch.Tensor | None:
        for param, grad in self.grads.items():
            param.grad = grad
        try:
            return self.importance(group)
        finally:
            for param in self.grads:
                param.grad = None


def empirical_fisher(model: TaskModel, ctx: PruneContext, samples: int) -> dict[nn.Parameter, torch.Tensor]:
    """The mean squared per-sample gradient of the task loss over ``samples`` seeded training images (norm
    statistics frozen): the diagonal Fisher that stands for the Hessian's diagonal in Optimal Brain Damage."""
    data, rng = ctx.data, torch.Generator().manual_seed(ctx.seed)
    x_train, y_train = data.images["train"], data.targets["train"]
    order = torch.randperm(len(x_train), generator=rng)[:samples].numpy()
    params = [p for p in model.parameters() if p.requires_grad]
    total = {p: torch.zeros_like(p) for p in params}
    set_train_mode(model, freeze_norm_stats=True)
    try:
        for i in order:
            model.zero_grad(set_to_none=True)
            x = ctx.source.preprocess(torch.from_numpy(x_train[i : i + 1]), ctx.size)
            data.task.loss(model(x), torch.from_numpy(y_train[i : i + 1])).backward()
            for p in params:
                if p.grad is not None:
                    total[p] += p.grad.detach() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    return {p: t / len(order) for p, t in total.items()}


class Hessian(GroupCriterion):
    """Group Optimal Brain Damage: ``w^2`` times the Hessian's diagonal, summed over a channel's group (LeCun et al.,
    NeurIPS 1989; Torch-Pruning's ``GroupHessianImportance``), the diagonal estimated as the empirical Fisher of
    ``samples`` training images."""

    name = "hessian"

    def __init__(self, samples: int = 64, policy: Policy = "global", max_layer_ratio: float = 0.95):
        super().__init__(policy, max_layer_ratio)
        self.samples = self.at_least_one("samples", samples)

    def criterion(self) -> tp.importance.Importance:
        return tp.importance.GroupHessianImportance(group_reduction="mean", normalizer="mean")

    def importance(self, model: TaskModel, ctx: PruneContext) -> Scorer:
        # Torch-Pruning's own accumulate_grad keys its sums by parameter but tests for names (1.6.1), so it keeps
        # only the last sample's gradient: the Fisher is accumulated here and handed over as param.grad.
        return _WithGradients(self.criterion(), empirical_fisher(model, ctx, self.samples))
