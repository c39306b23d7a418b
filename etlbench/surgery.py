"""Structural surgery: channels are physically removed (Torch-Pruning underneath), or the trunk is truncated.

:func:`prune_to_budget` searches the pruning ratio until the model lands within the tolerance of the
target compression, or reports the target as infeasible with the reason; it never changes the target.
Importance comes from a per-layer channel score (:class:`ChannelScoreImportance`), in the spirit of
Torch-Pruning's ``Importance`` (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch_pruning as tp
from torch import nn

from etlbench import measure
from etlbench.backbones import ChannelPad
from etlbench.train import TaskModel

BISECTION_STEPS = 16  # of the pruning ratio: enough for a 10% tolerance at every budget tried
ScoreFn = Callable[[str, nn.Module], "torch.Tensor | None"]
#: What a method scores channels with: a per-layer score of output channels, or a Torch-Pruning group importance.
Scorer = ScoreFn | tp.importance.Importance
_OUT_CHANNEL_FNS = {tp.prune_conv_out_channels, tp.prune_depthwise_conv_out_channels, tp.prune_linear_out_channels}


class ChannelScoreImportance(tp.importance.Importance):
    """Group importance from a per-layer score of output channels.

    Every layer of a coupled group whose output channels are removed (convolutions and linear layers,
    ChannelPad excepted) contributes its scores, normalised by their mean (per-layer normalised global
    ranking); the group's importance is their average. ``score(name, layer)`` may return ``None`` for a
    layer it has no opinion on.
    """

    def __init__(self, model: nn.Module, score: ScoreFn):
        self.names = {id(m): n for n, m in model.named_modules()}
        self.score = score

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor | None:
        total, count = torch.zeros(len(group[0].root_idxs)), 0
        for item in group:
            layer, idxs = item.dep.layer, item.idxs
            if item.dep.pruning_fn not in _OUT_CHANNEL_FNS or isinstance(layer, ChannelPad):
                continue
            scores = self.score(self.names[id(layer)], layer)
            if scores is None:
                continue
            scores = scores.detach().float().flatten()
            scores = scores / scores.mean().clamp_min(1e-12)
            total.index_add_(0, torch.as_tensor(item.root_idxs), scores[torch.as_tensor(idxs)])
            count += 1
        return total / count if count else None


@dataclass(frozen=True)
class Budget:
    """A target compression of parameters (or MACs): baseline / pruned, e.g. 4.0; met within ``tolerance``."""

    compression: float
    of: Literal["params", "macs"] = "params"
    tolerance: float = 0.10

    def __post_init__(self) -> None:
        if self.compression < 1:
            raise ValueError(f"compression must be at least 1 (a ratio baseline/pruned), got {self.compression}")
        if self.of not in ("params", "macs"):
            raise ValueError(f"a budget is a compression of 'params' or 'macs', got {self.of!r}")


@dataclass
class PruneOutcome:
    """A pruned model (``None`` when infeasible), its size, and the method's own result columns (``fields``,
    e.g. ETL's cut layer)."""

    model: TaskModel | None
    status: Literal["ok", "infeasible"]
    reason: str
    params: int
    macs: int
    fields: dict[str, object] = field(default_factory=dict)


def _size(model: nn.Module, of: str, size: tuple[int, int]) -> int:
    return measure.count_params(model) if of == "params" else measure.count_macs(model, size)


def freeze_channel_pads(model: nn.Module) -> None:
    """ChannelPad weights are a fixed selection; keep them out of training after surgery."""
    for m in model.modules():
        if isinstance(m, ChannelPad):
            m.weight.requires_grad_(False)


#: The layers whose output channels root a group: every convolution and linear layer but the task head.
ROOT_TYPES = (nn.Conv2d, nn.Linear)


def ignored_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose outputs are never pruned: the head's last convolution or linear layer (a task head's
    outputs, or the width of an embedding)."""
    layers = [m for m in model.head.modules() if isinstance(m, ROOT_TYPES)] if hasattr(model, "head") else []
    return layers[-1:]


def dependency_graph(model: nn.Module, size: tuple[int, int]) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` on one ``size`` image."""
    with torch.inference_mode(False), torch.enable_grad():  # the graph is traced through autograd
        return tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 3, *size))


def _groups(model: nn.Module, size: tuple[int, int]) -> list[tp.Group]:
    """The coupled channel groups of ``model`` (the head's outputs excluded), in a stable order."""
    return list(dependency_graph(model, size).get_all_groups(ignored_layers=ignored_layers(model),
                                                             root_module_types=list(ROOT_TYPES)))


def without_channel_pads(group: tp.Group) -> tp.Group:
    """``group`` without its ChannelPad items: their fixed 0/1 weights are no evidence of a channel's importance."""
    kept = tp.Group()
    kept._group = [item for item in group if not isinstance(item.dep.layer, ChannelPad)]
    kept._DG = group._DG
    return kept


def group_importance(model: TaskModel, score: Scorer, size: tuple[int, int]) -> list[torch.Tensor | None]:
    """One importance vector per coupled group (``None``: no layer of the group was scored). ``score`` is a
    per-layer score of output channels, or a Torch-Pruning ``Importance`` that reads each group as a whole (the
    ChannelPads left out, unless it says it ``reads_channel_pads``: as wiring that consumes the channels)."""
    if isinstance(score, tp.importance.Importance):
        keep = getattr(score, "reads_channel_pads", False)
        with torch.no_grad():
            return [score(g if keep else without_channel_pads(g)) for g in _groups(model, size)]
    importance = ChannelScoreImportance(model, score)
    return [importance(g) for g in _groups(model, size)]


def plan_pruning(importance: list[torch.Tensor | None], ratio: float, policy: Literal["global", "uniform"],
                 max_layer_ratio: float) -> list[torch.Tensor]:
    """Channel indices to remove per group: ``ratio`` of all scored channels, lowest importance first.

    ``uniform`` removes the same fraction from every group; ``global`` ranks all channels together (the
    scores are normalised per layer) and removes exactly ``ratio`` of them, with at most ``max_layer_ratio`` of
    any group; among channels of equal score those earlier in their group, relative to its size, go first (whole
    groups that tie give channels in proportion to their sizes), so ties never make a budget unreachable.
    """
    empty = torch.zeros(0, dtype=torch.long)
    scored = [imp for imp in importance if imp is not None]
    if ratio <= 0 or not scored:
        return [empty for _ in importance]
    if policy == "global":  # exactly the k lowest of all channels; ties by each channel's relative place
        flat = torch.cat(scored)
        owner = torch.cat([torch.full((len(imp),), i) for i, imp in enumerate(scored)])
        by_place = torch.argsort(torch.cat([torch.arange(len(imp)) / len(imp) for imp in scored]), stable=True)
        lowest = by_place[torch.argsort(flat[by_place], stable=True)][: int(ratio * len(flat))]
        counts = iter(torch.bincount(owner[lowest], minlength=len(scored)).tolist())
    plan = []
    for imp in importance:
        if imp is None:
            plan.append(empty)
            continue
        cap = min(int(max_layer_ratio * len(imp)), len(imp) - 1)
        n = int(ratio * len(imp)) if policy == "uniform" else next(counts)
        plan.append(torch.argsort(imp, stable=True)[: min(n, cap)])
    return plan


def apply_plan(model: TaskModel, plan: list[torch.Tensor], size: tuple[int, int]) -> TaskModel:
    """A copy of ``model`` with the planned channels physically removed."""
    pruned = copy.deepcopy(model)
    for group, idxs in zip(_groups(pruned, size), plan, strict=True):
        if len(idxs):
            dep = group[0].dep
            group._DG.get_pruning_group(dep.target.module, dep.handler, idxs.tolist()).prune()
    freeze_channel_pads(pruned)
    return pruned


def prune_channels(model: TaskModel, score: Scorer, ratio: float, size: tuple[int, int], *,
                   policy: Literal["global", "uniform"] = "global", max_layer_ratio: float = 0.95) -> TaskModel:
    """A pruned copy with ``ratio`` of the scored channels removed (the head's outputs never are)."""
    plan = plan_pruning(group_importance(model, score, size), ratio, policy, max_layer_ratio)
    return apply_plan(model, plan, size)


def prune_to_budget(model: TaskModel, score: Scorer, budget: Budget, baseline: int, size: tuple[int, int], *,
                    policy: Literal["global", "uniform"] = "global", max_layer_ratio: float = 0.95) -> PruneOutcome:
    """Bisect the pruning ratio until ``baseline / size(pruned)`` is within the budget's tolerance."""
    target = baseline / budget.compression
    lo_ok, hi_ok = (1 - budget.tolerance) * target, (1 + budget.tolerance) * target

    def outcome(m: TaskModel, status: str = "ok", reason: str = "") -> PruneOutcome:
        return PruneOutcome(m if status == "ok" else None, status, reason, measure.count_params(m),
                            measure.count_macs(m, size))

    start = _size(model, budget.of, size)
    if start < lo_ok:
        return outcome(model, "infeasible", f"the start model has {start:,} {budget.of}, already below "
                                                  f"the target {target:,.0f} ({baseline:,} / {budget.compression})")
    if start <= hi_ok:
        return outcome(copy.deepcopy(model))
    importance = group_importance(model, score, size)

    def pruned_at(ratio: float) -> tuple[TaskModel, int]:
        m = apply_plan(model, plan_pruning(importance, ratio, policy, max_layer_ratio), size)
        return m, _size(m, budget.of, size)

    smallest, n = pruned_at(1.0)
    if n > hi_ok:
        return outcome(smallest, "infeasible",
                       f"removing every channel the selection policy allows ({policy}, at most {max_layer_ratio:.0%} "
                       f"per layer) leaves {n:,} {budget.of}, above the target {target:,.0f} (+{budget.tolerance:.0%})")
    lo, hi, best = 0.0, 1.0, None
    for _ in range(BISECTION_STEPS):
        ratio = (lo + hi) / 2
        pruned, n = pruned_at(ratio)
        err = abs(n / target - 1)
        if lo_ok <= n <= hi_ok and (best is None or err < best[0]):
            best = (err, pruned)
            if err < budget.tolerance / 4:
                break
        lo, hi = (ratio, hi) if n > target else (lo, ratio)
    if best is None:
        return outcome(model, "infeasible", f"no pruning ratio gave {budget.of} within {budget.tolerance:.0%} of "
                                                f"{target:,.0f}: the channel granularity is too coarse at this budget")
    return outcome(best[1])
