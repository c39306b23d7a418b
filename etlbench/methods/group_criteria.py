"""Torch-Pruning's data-free group criteria, used through Torch-Pruning (``tp.importance``), not rewritten.

Each scores a coupled channel group as Torch-Pruning does (every layer whose channels the group removes, input
sides included; ChannelPads left out, :func:`etlbench.surgery.without_channel_pads`) and normalises the group's
scores by their mean, so that the shared selection can rank channels of all groups together. The rows record
Torch-Pruning's version (``criterion_library``).
"""

from __future__ import annotations

import importlib.metadata

import torch_pruning as tp

from etlbench.methods.base import PruneContext, PruningMethod
from etlbench.surgery import Budget, PruneOutcome, Scorer
from etlbench.train import TaskModel


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
    ``GroupMagnitudeImportance``; Fang et al., "DepGraph", CVPR 2023; after Li et al., ICLR 2017)."""

    name = "l2"

    def criterion(self) -> tp.importance.Importance:
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")


class FPGM(GroupCriterion):
    """Filter pruning via the geometric median: filters closest to the others are redundant (He et al., CVPR
    2019; Torch-Pruning's ``FPGMImportance``)."""

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
