"""ETL: efficient transfer learning by retaining only cross-task-aware filters.

John, Dua, Balasubramanian, Jawahar, "ETL: Efficient Transfer Learning for Face Tasks", VISAPP 2022, after
"Low-Cost Transfer Learning of Face Tasks" (arXiv 1901.02675). The operational definition of
``docs/etl-method.md``: probe the frozen source network with linear models, cut it after the
shallowest layer whose probe is within ``epsilon`` of the best, score each filter by how much the probe
reads it, keep the most important filters to the budget, attach a new head and recover. No transfer
learning is needed before pruning. On verification (Grundstrom et al., ICIAR 2016) the probes tell whether two
images show the same person from the difference of their descriptors, and nothing is cut: the head is the
source's own embedding.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from etlbench import measure
from etlbench.backbones import ChannelPad, SourceNetwork
from etlbench.measure import eval_mode
from etlbench.methods.base import Policy, PruneContext, PruningMethod
from etlbench.methods.baselines import Taylor
from etlbench.methods.controls import Uniform
from etlbench.probe import (
    PROBE_TOL,
    ProbeView,
    fit_probe,
    head_from_probe,
    probe_outputs,
    probe_strength,
    probe_view,
    trunk_features,
)
from etlbench.surgery import Budget, PruneOutcome, Scorer, prune_channels, prune_to_budget
from etlbench.tasks import Task
from etlbench.train import TaskModel, build_task_model, iterate_batches


@dataclass
class ProbeReport:
    """Held-out probe score per cut point (in order), filter importance per probed conv (by module name), and
    the regularisation strength every probe used (chosen once, by cross-validation at the deepest cut)."""

    cut_scores: dict[str, float]
    importance: dict[str, np.ndarray]
    strength: float
    seconds: float
    samples: int

    def best_score(self, higher_is_better: bool) -> float:
        return max(self.cut_scores.values()) if higher_is_better else min(self.cut_scores.values())

    def channel_scores(self, name: str, layer: nn.Module) -> torch.Tensor | None:
        """The probe's coefficient norms of a conv's filters (model module names are relative to the trunk)."""
        scores = self.importance.get(name.removeprefix("trunk."))
        return None if scores is None else torch.from_numpy(scores)


def _probe_score(task: Task, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 seed: int, strength: float) -> float:
    probe = fit_probe(task, train_x, train_y, seed, strength, PROBE_TOL)
    return task.evaluate(task.predictions(probe_outputs(probe, task, test_x)), test_y)[task.metric_name]


def _coefficient_norms(task: Task, x: np.ndarray, y: np.ndarray, seed: int, strength: float) -> np.ndarray:
    """How much the task reads each feature: the norm of its standardised probe coefficients over outputs."""
    coef = np.asarray(fit_probe(task, x, y, seed, strength, PROBE_TOL)[-1].coef_)
    return np.linalg.norm(coef.reshape(-1, x.shape[1]), axis=0)


@torch.inference_mode()
def _descriptors(source: SourceNetwork, images: np.ndarray, size: tuple[int, int], cuts: list[str],
                 descriptor: str, with_convs: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-filter descriptors (spatial mean or max) of every cut point and (``with_convs``) of every conv's
    output, in one pass that stops at the deepest cut."""
    reduce = (lambda t: t.mean(dim=(2, 3))) if descriptor == "mean" else (lambda t: t.amax(dim=(2, 3)))
    convs = {n: m for n, m in source.blocks.named_modules()
             if with_convs and isinstance(m, nn.Conv2d) and not isinstance(m, ChannelPad)}
    conv_parts: dict[str, list[torch.Tensor]] = {n: [] for n in convs}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: conv_parts[n].append(reduce(out)))
             for n, m in convs.items()]
    cut_parts: dict[str, list[torch.Tensor]] = {c: [] for c in cuts}
    try:
        with eval_mode(source):
            for b in iterate_batches(images, 64):
                outs = source.collect(source.preprocess(torch.from_numpy(images[b]), size), cuts)
                for c in cuts:
                    cut_parts[c].append(reduce(outs[c]))
    finally:
        for h in hooks:
            h.remove()
    return _stack(cut_parts), _stack(conv_parts)


def _stack(parts: dict[str, list[torch.Tensor]]) -> dict[str, np.ndarray]:
    return {k: torch.cat(v).double().numpy() for k, v in parts.items() if v}


class ETL(PruningMethod):
    """Cross-task-aware filter selection from linear probes of the frozen source network (John et al.,
    VISAPP 2022). Parameters: ``probe_samples`` training images probed (once, cached); ``epsilon`` the relative
    tolerance of the depth rule; ``descriptor`` ``mean`` or ``max`` over space; ``holdout`` the fraction of the
    probe subset that scores the cut-point probes; ``policy``/``max_layer_ratio`` the shared selection policy."""

    name = "etl"

    starts_from = "source"
    chooses_operating_point = True  # compression auto: the epsilon rule also picks the filter fraction
    #: What the probes read (the frozen ``source``, or the ``transfer``-learned trunk) and what scores the filters
    #: after the cut (the ``probe``'s coefficients, ``uniform`` width, or ``taylor``): the ablations change these.
    probe_of: ClassVar[Literal["source", "transfer"]] = "source"
    width: ClassVar[Literal["probe", "uniform", "taylor"]] = "probe"

    def __init__(self, probe_samples: int = 2000, epsilon: float = 0.01,
                 descriptor: Literal["mean", "max"] = "mean", holdout: float = 0.2,
                 policy: Policy = "global", max_layer_ratio: float = 0.95):
        super().__init__(policy, max_layer_ratio)
        for key, value, ok, expected in (
                ("descriptor", descriptor, descriptor in ("mean", "max"), "'mean' or 'max'"),
                ("holdout", holdout, 0 < holdout < 1, "in (0, 1)"), ("epsilon", epsilon, epsilon >= 0, "at least 0"),
                ("probe_samples", probe_samples, probe_samples >= 50, "at least 50")):
            if not ok:
                raise self.error(key, f"must be {expected}, got {value!r}")
        self.probe_samples, self.epsilon, self.descriptor, self.holdout = probe_samples, epsilon, descriptor, holdout

    # ---- 1. cross-task probing ----------------------------------------------------------------------
    def _cache_path(self, ctx: PruneContext) -> Path | None:
        if ctx.cache_dir is None:
            return None
        key = ctx.cache_key("etl-probes", probe_samples=self.probe_samples, descriptor=self.descriptor,
                            holdout=self.holdout, probe_of=self.probe_of)
        return Path(ctx.cache_dir) / f"etl-probes-{key}.npz"

    def _probe_subset(self, ctx: PruneContext) -> tuple[np.ndarray, np.ndarray]:
        """The seeded subset of training images (and targets) that every probe of this method reads; for
        verification, whole identities in a seeded order (targets are identities), so that pairs survive."""
        train_x, train_y = ctx.data.images["train"], ctx.data.targets["train"]
        rng = np.random.default_rng(ctx.seed)
        if ctx.data.task.kind == "verification":
            rank = rng.permutation(int(train_y.max()) + 1)[train_y]
            idx = np.argsort(rank, kind="stable")[: self.probe_samples]
        else:
            idx = rng.permutation(len(train_x))[: self.probe_samples]
        return train_x[idx], train_y[idx]

    def _view(self, ctx: PruneContext, targets: np.ndarray) -> ProbeView:
        """The probe problem on the probe subset: its first ``1 - holdout`` fit, the rest score (for verification,
        same-person pairs; :func:`etlbench.probe.probe_view`)."""
        return probe_view(ctx.data.task, targets, round(len(targets) * (1 - self.holdout)), ctx.seed)

    def probe(self, ctx: PruneContext) -> ProbeReport:
        """Probe every cut point (held-out score) and every conv (coefficient norms), or read the cache.

        The regularisation is cross-validated once, on the fit part at the deepest cut, and shared by every
        probe: one cross-validation per layer made 7-class probing take over ten minutes on 2 cores."""
        path = self._cache_path(ctx)
        if path is not None and path.is_file():
            with np.load(path, allow_pickle=False) as z:
                cuts = [str(c) for c in z["cut_names"]]
                return ProbeReport(dict(zip(cuts, z["cut_scores"].tolist(), strict=True)),
                                   {k[4:]: z[k] for k in z.files if k.startswith("imp/")},
                                   float(z["strength"]), float(z["seconds"]), int(z["samples"]))
        start = time.perf_counter()
        images, y = self._probe_subset(ctx)
        view = self._view(ctx, y)
        cuts = [p.name for p in ctx.source.cut_points()]
        cut_x, conv_x = _descriptors(ctx.source, images, ctx.size, cuts, self.descriptor)
        fit_x, fit_y, _, _ = view.split(cut_x[cuts[-1]])
        strength = probe_strength(fit_probe(view.task, fit_x, fit_y, ctx.seed, tol=PROBE_TOL))
        scores = {c: _probe_score(view.task, *view.split(cut_x[c]), ctx.seed, strength) for c in cuts}
        importance = {n: _coefficient_norms(view.task, view.features(x), view.targets, ctx.seed, strength)
                      for n, x in conv_x.items()}
        report = ProbeReport(scores, importance, strength, time.perf_counter() - start, len(y))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")  # never a truncated cache file
            np.savez(partial, cut_names=np.array(cuts), cut_scores=np.array([scores[c] for c in cuts]),
                     strength=strength, seconds=report.seconds, samples=report.samples,
                     **{f"imp/{n}": v for n, v in importance.items()})
            os.replace(partial, path)
        return report

    def shared_stage(self, ctx: PruneContext) -> None:
        """Probe once per setting (cached) before the trials that read the probes."""
        self.probe(self.probed(ctx))

    # ---- 2. depth -----------------------------------------------------------------------------------
    def depth(self, ctx: PruneContext, report: ProbeReport) -> str:
        """Where the network is cut: the epsilon rule, or for verification nowhere (the last cut point), since the
        head is the source's own embedding and reads the whole trunk."""
        if ctx.data.task.kind == "verification":
            return list(report.cut_scores)[-1]
        return self.epsilon_cut(report, ctx.data.task.higher_is_better)

    def epsilon_cut(self, report: ProbeReport, higher_is_better: bool) -> str:
        """The shallowest cut point whose probe is within ``epsilon`` (relative) of the best one."""
        best = report.best_score(higher_is_better)
        return next(cut for cut, s in report.cut_scores.items() if self._within(s, best, higher_is_better))

    def _within(self, score: float, best: float, higher_is_better: bool) -> bool:
        return score >= best * (1 - self.epsilon) if higher_is_better else score <= best * (1 + self.epsilon)

    def probed(self, ctx: PruneContext) -> PruneContext:
        """``ctx`` with the network the probes read and the pruned model is cut from as its source: the frozen
        source network, or (``probe_of`` ``transfer``) a copy of it with the transfer-learned trunk's weights."""
        if self.probe_of == "source":
            return ctx
        network = copy.deepcopy(ctx.source)
        network.blocks.load_state_dict(ctx.transfer_model().trunk.state_dict())
        return replace(ctx, source=network)

    @staticmethod
    def _truncated(ctx: PruneContext, cut: str) -> TaskModel:
        return build_task_model(ctx.source, ctx.data.task, ctx.data.targets["train"], cut=cut, seed=ctx.seed)

    # ---- 3. filter importance and 4. selection ------------------------------------------------------
    def prune(self, ctx: PruneContext, budget: Budget | None) -> PruneOutcome:
        """Probe (or read the probes), cut where :meth:`depth` says, score filters by the probes' coefficients and
        select them to the budget; without a budget the epsilon rule also picks the filters (budget-free)."""
        ctx = self.probed(ctx)
        report = self.probe(ctx)
        higher = ctx.data.task.higher_is_better
        cut = self.depth(ctx, report)
        fields = dict(probe_seconds=report.seconds, probe_samples=report.samples, probe_strength=report.strength,
                      probe_cut_score=report.cut_scores[cut], probe_best_score=report.best_score(higher))
        if budget is None:
            outcome = self._budget_free(ctx, report, cut)
        else:
            model, cut = self._deep_enough(ctx, report, cut, budget)
            outcome = prune_to_budget(model, self._width_scores(ctx, report, model), budget,
                                      ctx.baseline_size(budget.of), ctx.size,
                                      policy="uniform" if self.width == "uniform" else self.policy,
                                      max_layer_ratio=self.max_layer_ratio)
        return replace(outcome, fields={**fields, "cut_layer": cut, **outcome.fields})

    def _width_scores(self, ctx: PruneContext, report: ProbeReport, model: TaskModel) -> Scorer:
        """What scores the filters left after the cut: the probes (ETL), or for an ablation the first channels
        (uniform width) or Taylor's criterion with the head fitted as the probe of the truncated trunk."""
        if self.width == "uniform":
            return Uniform().channel_scores
        if self.width == "taylor":
            images, y = self._probe_subset(ctx)
            features = trunk_features(model.trunk, images, ctx.source.preprocess, ctx.size)
            head_from_probe(model.head, fit_probe(ctx.data.task, features, y, ctx.seed, report.strength, PROBE_TOL),
                            ctx.data.task)
            return Taylor().importance(model, ctx)
        return report.channel_scores

    def _deep_enough(self, ctx: PruneContext, report: ProbeReport, cut: str, budget: Budget) -> tuple[TaskModel, str]:
        """The model truncated at ``cut``, or deeper where the cut alone already undershoots the budget."""
        floor = ctx.baseline_size(budget.of) / budget.compression * (1 - budget.tolerance)
        names = list(report.cut_scores)
        for deeper in names[names.index(cut):]:
            model = self._truncated(ctx, deeper)
            size = measure.count_params(model) if budget.of == "params" else measure.count_macs(model, ctx.size)
            if size >= floor:
                break
        return model, deeper

    def _budget_free(self, ctx: PruneContext, report: ProbeReport, cut: str) -> PruneOutcome:
        """Keep the smallest fraction of the cut layer's filters (by importance) whose probe stays within
        ``epsilon`` of the probe on all of them; prune every layer to that fraction."""
        images, y = self._probe_subset(ctx)
        view = self._view(ctx, y)
        cut_x, _ = _descriptors(ctx.source, images, ctx.size, [cut], self.descriptor, with_convs=False)
        fit_x, fit_y, held_x, held_y = view.split(cut_x[cut])
        order = np.argsort(-_coefficient_norms(view.task, fit_x, fit_y, ctx.seed, report.strength))
        full = report.cut_scores[cut]
        keep = 1.0
        for fraction in np.arange(0.1, 1.0, 0.1):
            cols = order[: max(1, round(fraction * fit_x.shape[1]))]
            s = _probe_score(view.task, fit_x[:, cols], fit_y, held_x[:, cols], held_y, ctx.seed, report.strength)
            if self._within(s, full, view.task.higher_is_better):
                keep = float(fraction)
                break
        pruned = prune_channels(self._truncated(ctx, cut), report.channel_scores, 1 - keep, ctx.size,
                                policy="uniform", max_layer_ratio=self.max_layer_ratio)
        return PruneOutcome(pruned, "ok", "", measure.count_params(pruned), measure.count_macs(pruned, ctx.size),
                            fields={"kept_fraction": keep})


#: The ablations ask what ETL's cut and probes are worth; on verification nothing is cut (:meth:`ETL.depth`), so
#: the cut ablations would be plain uniform and Taylor pruning, and they are not run there; nor is ``etl-transfer``,
#: whose probed copy of the source takes the transfer-learned trunk but not the transfer-learned embedding.
ABLATION_TASK_KINDS = ("regression", "classification")


class ETLCutUniform(ETL):
    """ETL ablation: ETL's depth rule (probes of the frozen source), then criterion-free uniform width to the budget
    (each layer keeps its first channels): what the cut alone is worth."""

    name = "etl-cut-uniform"
    task_kinds = ABLATION_TASK_KINDS
    width = "uniform"
    chooses_operating_point = False


class ETLCutTaylor(ETL):
    """ETL ablation: ETL's depth rule, then Taylor's criterion (head fitted as the probe of the truncated trunk)
    instead of the probes' coefficients: whether ETL's filter scores beat a strong criterion after the same cut."""

    name = "etl-cut-taylor"
    task_kinds = ABLATION_TASK_KINDS
    width = "taylor"
    chooses_operating_point = False


class ETLOnTransfer(ETL):
    """ETL ablation: ETL's probes, cut and filter scores read from the transfer-learned trunk instead of the frozen
    source (and the pruned model cut from it): whether probing before transfer learning loses anything."""

    name = "etl-transfer"
    task_kinds = ABLATION_TASK_KINDS
    probe_of = "transfer"
    starts_from = "transfer"  # it reads the transfer baseline: its cost counts
