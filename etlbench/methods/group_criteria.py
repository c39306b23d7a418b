"""Torch-Pruning's group criteria, used through Torch-Pruning (``tp.importance``), not rewritten.

Each scores a coupled channel group as Torch-Pruning does (every layer whose channels the group removes, input
sides included; ChannelPads left out, :func:`etlbench.surgery.without_channel_pads`) and normalises the group's
scores (by their mean; LAMP by its own rule), so that the shared selection can rank channels of all groups
together. Where Torch-Pruning's criterion differs from its paper, the docstring says so. The rows record
Torch-Pruning's version (``criterion_library``).
"""

from __future__ import annotations

import importlib.metadata
import warnings

import torch
import torch_pruning as tp
from torch import nn

from etlbench.backbones import ChannelPad
from etlbench.methods.base import Policy, PruneContext, PruningMethod, gradient_pass, hooked
from etlbench.surgery import ROOT_TYPES, Budget, PruneOutcome, Scorer, dependency_graph, ignored_layers
from etlbench.train import TaskModel


class GroupCriterion(PruningMethod):
    """A Torch-Pruning group importance applied by the shared selection; subclasses name the importance."""

    def criterion(self, model: TaskModel) -> tp.importance.Importance:
        """Torch-Pruning's importance for ``model``."""
        raise NotImplementedError

    def importance(self, model: TaskModel, ctx: PruneContext) -> Scorer:
        return self.criterion(model)

    def prune(self, ctx: PruneContext, budget: Budget | None) -> PruneOutcome:
        outcome = super().prune(ctx, budget)
        outcome.fields["criterion_library"] = f"torch-pruning {importlib.metadata.version('torch-pruning')}"
        return outcome


class GroupL2(GroupCriterion):
    """Group L2 norm of every weight a channel owns across its coupled layers (Torch-Pruning's
    ``GroupMagnitudeImportance``; Fang et al., "DepGraph", CVPR 2023; after Li et al., ICLR 2017). As Torch-Pruning
    computes it: each layer's squared L2 norm (batch-norm scales included), averaged over the group's layers."""

    name = "l2"

    def criterion(self, model: TaskModel) -> tp.importance.Importance:
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")


class FPGM(GroupCriterion):
    """Filter pruning via the geometric median: filters closest to the others are redundant (He et al., CVPR
    2019; Torch-Pruning's ``FPGMImportance``). Torch-Pruning's variant: distances between the filters' element-wise
    ``|w|^2`` vectors (not the raw filters of the paper), averaged with the consuming layers' input slices."""

    name = "fpgm"

    def criterion(self, model: TaskModel) -> tp.importance.Importance:
        return tp.importance.FPGMImportance(p=2, group_reduction="mean", normalizer="mean")


class LAMP(GroupCriterion):
    """Layer-adaptive magnitude-based pruning: each squared magnitude over the sum of those not smaller in its
    group (Lee et al., ICLR 2021; Torch-Pruning's ``LAMPImportance``)."""

    name = "lamp"

    def criterion(self, model: TaskModel) -> tp.importance.Importance:
        return tp.importance.LAMPImportance(p=2, group_reduction="mean", normalizer="lamp")


class BNScale(GroupCriterion):
    """The scale (|gamma|) of each channel's batch norm (Liu et al., "Network Slimming", ICCV 2017; Torch-Pruning's
    ``BNScaleImportance``). dlib's norms are folded affine layers over identity statistics; the recovery recipe
    (``norm: recalibrate``) re-expresses them with the train split's statistics before pruning, so a scale is dlib's
    multiplier times the channel's standard deviation. A group without a norm is not scored (kept)."""

    name = "bn-scale"

    def criterion(self, model: TaskModel) -> tp.importance.Importance:
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
    params = [p for p in model.parameters() if p.requires_grad]
    total, seen = {p: torch.zeros_like(p) for p in params}, 0
    with gradient_pass(model):
        for x, y in ctx.training_batches(samples, batch_size=1):
            seen += 1
            model.zero_grad(set_to_none=True)
            ctx.data.task.loss(model(x), y).backward()
            for p in params:
                if p.grad is not None:
                    total[p] += p.grad.detach() ** 2
    return {p: t / seen for p, t in total.items()}


class Hessian(GroupCriterion):
    """Group Optimal Brain Damage: ``w^2`` times the Hessian's diagonal, summed over a channel's group (LeCun et al.,
    NeurIPS 1989; Torch-Pruning's ``GroupHessianImportance``), the diagonal estimated as the empirical Fisher of
    ``samples`` training images."""

    name = "hessian"

    def __init__(self, samples: int = 64, policy: Policy = "global", max_layer_ratio: float = 0.95):
        super().__init__(policy, max_layer_ratio)
        self.samples = self.at_least_one("samples", samples)

    def criterion(self, model: TaskModel) -> tp.importance.Importance:
        return tp.importance.GroupHessianImportance(group_reduction="mean", normalizer="mean")

    def importance(self, model: TaskModel, ctx: PruneContext) -> Scorer:
        # Torch-Pruning's own accumulate_grad keys its sums by parameter but tests for names (1.6.1), so it keeps
        # only the last sample's gradient: the Fisher is accumulated here and handed over as param.grad.
        return _WithGradients(self.criterion(model), empirical_fisher(model, ctx, self.samples))


class OBDC(GroupCriterion):
    """OBD with the exact per-sample empirical Fisher diagonal, from ``batches`` training batches (the ``fisher_diag``
    criterion of the code of Wang et al., "EigenDamage: Structured Pruning in the Kronecker-Factored Eigenbasis",
    ICML 2019; Torch-Pruning's ``OBDCImportance``).

    ``w^2`` times the diagonal of each layer's empirical Fisher, built from per-sample weight gradients (layer inputs
    times output gradients) of batches of 32, on the output side of the group's convolutions and linear layers only
    (``hessian`` also scores input sides and norms). Not the Kronecker-factored eigenbasis the paper reparameterises
    the network into; depthwise convolutions are not scored (the rest of their group is)."""

    name = "obdc"
    _SCORED = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)

    def __init__(self, batches: int = 4, policy: Policy = "global", max_layer_ratio: float = 0.95):
        super().__init__(policy, max_layer_ratio)
        self.batches = self.at_least_one("batches", batches)

    def criterion(self, model: TaskModel) -> tp.importance.Importance:
        # num_classes: no layer skipped for its output count (Torch-Pruning's way to spare a head; ours is no root)
        return tp.importance.OBDCImportance(group_reduction="mean", normalizer="mean", num_classes=-1)

    def importance(self, model: TaskModel, ctx: PruneContext) -> Scorer:
        importance = self.criterion(model)
        # The layers Torch-Pruning's _prepare_model would hook, hooked here with handles that are removed again
        # (its _rm_hooks empties every hook of the module and leaves the backward-hook kind set on it)
        groups = dependency_graph(model, ctx.size).get_all_groups(ignored_layers=ignored_layers(model),
                                                                 root_module_types=list(ROOT_TYPES))
        importance.modules = list({item.dep.layer: None for g in groups for item in g
                                   if isinstance(item.dep.layer, ROOT_TYPES) and item.dep.handler in self._SCORED
                                   and not isinstance(item.dep.layer, ChannelPad)})
        handles = [h for m in importance.modules for h in (m.register_forward_pre_hook(importance._save_input),
                                                             m.register_full_backward_hook(importance._save_grad_output))]
        with hooked(handles), gradient_pass(model), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")  # the stem: image input
            for x, y in ctx.training_batches(32 * self.batches):
                model.zero_grad(set_to_none=True)
                ctx.data.task.loss(model(x), y).backward()
                importance.step()
            grads = {m.weight: m.weight.grad.detach().clone() for m in importance.modules if m.weight.grad is not None}
        # Torch-Pruning 1.6.1 appends a bias column to the Fisher but never reads it, and looks up a Fisher for every
        # convolution of a group before it asks whether the layer is scored (depthwise ones and the head are not)
        for m in model.modules():
            if m in importance.Fisher and m.bias is not None:
                importance.Fisher[m] = importance.Fisher[m][:, :-1]
            elif isinstance(m, ROOT_TYPES) and m not in importance.Fisher:
                importance.Fisher[m] = torch.zeros(())  # looked up, never used
        return _WithGradients(importance, grads)
