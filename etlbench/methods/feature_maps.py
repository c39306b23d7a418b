"""Criteria that read the feature maps a channel group feeds forward: HRank (Lin et al., CVPR 2020) and Group
Fisher (Liu et al., ICML 2021), written here and scored per coupled group like Torch-Pruning's criteria.

A group's channels are read where they are consumed: at the input of every convolution or linear layer that takes
them in (the group's ``prune_in_channels`` items, and depthwise convolutions). That input is the producing layer's
output after its norm and activation and, on a residual stream, after the addition: the maps HRank ranks (its code
hooks the ReLUs) and the maps Group Fisher masks (its masks sit on the convolutions' inputs, one mask shared by a
coupled group).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import ClassVar, Literal

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.hooks import RemovableHandle

from etlbench.backbones import ChannelPad
from etlbench.methods.base import Policy, PruneContext, PruningMethod, gradient_pass, hooked
from etlbench.surgery import ROOT_TYPES, Budget, PruneOutcome, Scorer
from etlbench.train import TaskModel

_CONSUMER_FNS = (tp.prune_conv_in_channels, tp.prune_linear_in_channels)


def _is_depthwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and 1 < layer.groups == layer.in_channels


def consumers(group: tp.Group) -> Iterator[tuple[nn.Module, list[int], list[int]]]:
    """(layer, its input channels, the group's channels) for every layer of ``group`` that takes the channels in."""
    for item in group:
        layer = item.dep.layer
        if item.dep.handler in _CONSUMER_FNS or _is_depthwise(layer):
            yield layer, item.idxs, item.root_idxs


Hook = Callable[[nn.Module, torch.Tensor], "torch.Tensor | None"]


def input_hooks(model: nn.Module, on_input: Hook) -> list[RemovableHandle]:
    """``on_input(layer, input)`` on the input of every convolution and linear layer; where it returns a tensor, the
    layer takes that instead."""

    def hook(layer: nn.Module, args: tuple) -> tuple | None:
        replaced = on_input(layer, args[0])
        return None if replaced is None else (replaced, *args[1:])

    return [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, ROOT_TYPES)]


class ConsumedMapImportance(tp.importance.Importance):
    """A group importance from per-layer statistics of the consumed maps (``stats[layer]``: one value per input
    channel, or per sample and input channel), combined over the group's consumers by ``combine``."""

    reads_channel_pads: ClassVar[bool] = True  # a ChannelPad consumes the channels too (a down block's skip)

    def __init__(self, stats: dict[nn.Module, torch.Tensor],
                 combine: Callable[[tp.Group, list[tuple[torch.Tensor, list[int]]]], torch.Tensor | None]):
        self.stats, self.combine = stats, combine

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor | None:
        read = [(self.stats[layer][..., idxs], root) for layer, idxs, root in consumers(group) if layer in self.stats]
        return self.combine(group, read) if read else None


def _gathered(read: list[tuple[torch.Tensor, list[int]]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The statistics of every consumer summed at the group's channels, and how many inputs read each (a linear
    layer that reads a flattened map reads a channel at several inputs)."""
    total = torch.zeros(*read[0][0].shape[:-1], width, dtype=torch.float64)
    count = torch.zeros(width, dtype=torch.float64)
    for values, root in read:
        index = torch.as_tensor(root, dtype=torch.long)
        total.index_add_(-1, index, values.double())
        count.index_add_(0, index, torch.ones(len(index), dtype=torch.float64))
    return total, count


class HRank(PruningMethod):
    """Average rank of a channel's feature maps (after the activation) over ``samples`` training images (Lin et al.,
    "HRank: Filter Pruning using High-Rank Feature Map", CVPR 2020).

    Low-rank maps carry little information. Ranks are read where the maps are consumed (after the activation; on a
    residual stream after the addition), averaged over a group's consumers and normalised by their mean for the
    shared selection (the paper prunes each layer by a preset ratio; its code ranks 5 batches of 128 images). A
    linear layer after a global pool reads the map that entered the pool; a 1 x 1 map has rank 0 or 1."""

    name = "hrank"

    def __init__(self, samples: int = 128, policy: Policy = "global", max_layer_ratio: float = 0.95):
        super().__init__(policy, max_layer_ratio)
        self.samples = self.at_least_one("samples", samples)

    def importance(self, model: TaskModel, ctx: PruneContext) -> Scorer:
        sums: dict[nn.Module, torch.Tensor] = {}
        pooled: list[torch.Tensor] = []  # the ranks of the map that last entered a global pool
        seen = 0

        def ranks(x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.matrix_rank(x.float()).double()  # N x C; a 1 x 1 map has rank 0 or 1

        def rank(layer: nn.Module, x: torch.Tensor) -> None:
            if isinstance(layer, ChannelPad):  # a pooled copy of a map another layer reads
                return None
            if x.dim() == 4:
                r = ranks(x)
            elif pooled and pooled[-1].shape[-1] == x.shape[-1]:  # a linear layer after a global pool: that map
                r = pooled.pop()
            else:
                return None
            sums[layer] = sums[layer] + r.sum(0) if layer in sums else r.sum(0)
            return None

        model.eval()
        pools = [m.register_forward_pre_hook(lambda m, args: pooled.append(ranks(args[0])))
                 for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d)]
        with hooked(pools + input_hooks(model, rank)), torch.no_grad():
            for x, _ in ctx.training_batches(self.samples):
                pooled.clear()
                model(x)
                seen += len(x)

        def combine(group: tp.Group, read: list[tuple[torch.Tensor, list[int]]]) -> torch.Tensor:
            total, count = _gathered(read, len(group[0].root_idxs))
            mean = (total / seen / count.clamp_min(1)).float()
            return mean / mean.mean().clamp_min(1e-12)

        return ConsumedMapImportance(sums, combine)


class GroupFisher(PruningMethod):
    """Group Fisher: the loss increase of masking a channel (one mask per coupled group) over what removing it saves,
    from ``samples`` training images (Liu et al., "Group Fisher Pruning for Practical Network Compression", ICML 2021).

    The increase is ``1/2 sum over samples of (d loss / d mask)^2``, the mask's gradient summed over every layer that
    reads the channel before it is squared; the saving is in the budget's unit (parameters or MACs). The scores are
    not normalised per group: loss per unit saved compares across layers, as the paper ranks channels. The paper
    removes one channel at a time with fine-tuning between; here the shared selection removes them in one step."""

    name = "fisher"

    def __init__(self, samples: int = 128, policy: Policy = "global", max_layer_ratio: float = 0.95):
        super().__init__(policy, max_layer_ratio)
        self.samples = self.at_least_one("samples", samples)

    def prune(self, ctx: PruneContext, budget: Budget | None) -> PruneOutcome:
        if budget is None:
            return super().prune(ctx, budget)  # refused: Fisher needs a budget's unit
        model = self.start_model(ctx)
        return self.select(model, self.scorer(model, ctx, budget.of), budget, ctx)

    def importance(self, model: TaskModel, ctx: PruneContext) -> Scorer:
        return self.scorer(model, ctx, "params")

    def scorer(self, model: TaskModel, ctx: PruneContext, of: Literal["params", "macs"]) -> Scorer:
        """The Fisher importance per channel over its cost in ``of``."""
        grads: dict[nn.Module, list[torch.Tensor]] = defaultdict(list)
        batch: list[tuple[nn.Module, torch.Tensor]] = []  # this batch's masks
        areas: dict[nn.Module, int] = {}

        def mask(layer: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
            if not x.requires_grad:  # the image
                return None
            # a mask of ones per sample and input channel: its gradient is this layer's share of d loss_n / d mask
            ones = x.new_ones(*x.shape[:2], *(1,) * (x.dim() - 2)).requires_grad_()
            batch.append((layer, ones))
            return x * ones

        def watch_outputs(layer: nn.Module, args: tuple, out: torch.Tensor) -> None:
            areas[layer] = out.shape[-1] * out.shape[-2] if out.dim() == 4 else 1

        outputs = [m.register_forward_hook(watch_outputs) for m in model.modules() if isinstance(m, ROOT_TYPES)]
        with hooked(outputs + input_hooks(model, mask)), gradient_pass(model):
            for x, y in ctx.training_batches(self.samples):
                batch.clear()
                loss = len(x) * ctx.data.task.loss(model(x), y)  # the sum of per-sample losses
                per_layer: dict[nn.Module, torch.Tensor] = {}
                for (layer, _), g in zip(batch, torch.autograd.grad(loss, [m for _, m in batch]), strict=True):
                    per_layer[layer] = per_layer.get(layer, 0) + g.flatten(1)  # a layer called twice: one mask
                for layer, g in per_layer.items():
                    grads[layer].append(g)
        stats = {layer: torch.cat(g) for layer, g in grads.items()}

        def combine(group: tp.Group, read: list[tuple[torch.Tensor, list[int]]]) -> torch.Tensor:
            summed, _ = _gathered(read, len(group[0].root_idxs))
            return (0.5 * summed.pow(2).sum(0) / channel_cost(group, of, areas)).float()

        return ConsumedMapImportance(stats, combine)


def channel_cost(group: tp.Group, of: Literal["params", "macs"], areas: dict[nn.Module, int]) -> float:
    """What removing one channel of ``group`` saves: learned parameters (ChannelPads' fixed weights not counted, as
    :func:`etlbench.measure.count_params`), or the multiply-accumulates of convolutions and linear layers (as
    :func:`etlbench.measure.count_macs` counts them; ``areas``: each layer's output positions)."""
    cost = 0
    for item in group:
        layer, fn = item.dep.layer, item.dep.handler
        if isinstance(layer, ROOT_TYPES):
            out_side = fn in (tp.prune_conv_out_channels, tp.prune_linear_out_channels) or _is_depthwise(layer)
            weights = layer.weight[0].numel() if out_side else layer.weight[:, 0].numel()
            weights *= len(item.idxs) // max(1, len(set(item.root_idxs)))  # inputs per channel of a flattened map
            if of == "macs":
                cost += weights * areas.get(layer, 1)
            elif not isinstance(layer, ChannelPad):
                cost += weights + (out_side and layer.bias is not None)
        elif of == "params":
            cost += sum(p.numel() // p.shape[0] for p in layer.parameters(recurse=False) if p.dim() and p.shape[0] > 1)
    return float(max(cost, 1))
