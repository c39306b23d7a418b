"""LFW's ten folds from the two halves of the verification protocol (issue 16; Huang et al. 2007).

``verification`` tests on folds 5-9 and ``verification_reverse`` on folds 0-4, each scoring its own test folds by
the LFW protocol (a fold's threshold chosen on the others). A method, target and seed run on both halves gives
LFW's ten-fold figure exactly: the mean of the ten fold accuracies is the size-weighted mean of the halves' means,
and their standard deviation (n - 1) follows from each half's mean, standard deviation and number of folds. The
AUC is the mean of the halves' (pooled over all pairs it would need the scores, which rows do not keep). The
unpruned baseline's figures come from the test metrics each row keeps of its baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from etlbench.report.leaderboard import ci95, target_label, task_class

UNPRUNED = "unpruned (transfer baseline)"


def pooled(means: Sequence[float], stds: Sequence[float], sizes: Sequence[int]) -> tuple[float, float]:
    """Mean and standard deviation (n - 1) of the union of groups, from each group's mean, standard deviation
    (n - 1) and size."""
    n = sum(sizes)
    mean = sum(k * m for m, k in zip(means, sizes, strict=True)) / n
    squares = sum((k - 1) * s * s + k * (m - mean) ** 2 for m, s, k in zip(means, stds, sizes, strict=True))
    return mean, math.sqrt(squares / (n - 1)) if n > 1 else 0.0


def _test_folds(task: str) -> tuple[int, ...]:
    folds = getattr(task_class(task), "folds", None) or {}
    return tuple(folds.get("test", ()))


def _halves(trials: pd.DataFrame) -> dict[str, tuple[int, ...]]:
    """The verification tasks of ``trials`` whose test folds are disjoint halves, with their test folds."""
    folds = {t: f for t in sorted(trials["task"].unique()) if (f := _test_folds(t))}
    if len(folds) != 2 or set.intersection(*map(set, folds.values())):
        return {}
    return folds


def _ten_folds(accuracies: Sequence[float], metrics: Sequence[Any], sizes: Sequence[int]
               ) -> tuple[float, float, float]:
    """One point's ten-fold accuracy, fold standard deviation and AUC from its halves' accuracies and test metrics
    (NaN where a half's metrics are not stored)."""
    metrics = [m if isinstance(m, dict) else {} for m in metrics]
    mean, std = pooled(list(accuracies), [m.get("accuracy_std", math.nan) for m in metrics], sizes)
    return mean, std, sum(m.get("auc", math.nan) for m in metrics) / len(metrics)


def _summary(method: str, target: str, seeds: pd.DataFrame, retention: str) -> dict[str, Any]:
    # a seed whose rows do not keep the spread or AUC leaves the mean unknown, not taken over fewer seeds
    ci, std, auc = ci95(seeds["accuracy"]), seeds["fold_std"].mean(skipna=False), seeds["auc"].mean(skipna=False)
    return {"method": method, "target": target, "seeds": len(seeds),
            "accuracy (10 folds)": f"{seeds['accuracy'].mean():.4f}" + ("" if pd.isna(ci) else f" ± {ci:.3f}"),
            "fold std": "not stored" if pd.isna(std) else f"{std:.4f}",
            "AUC": "not stored" if pd.isna(auc) else f"{auc:.4f}", "retention": retention}


def ten_fold_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per method and target: accuracy over the ten folds (mean over seeds of each seed's ten-fold mean, with
    its 95% CI over seeds, and the fold standard deviation), the AUC, and retention against the unpruned
    baseline's ten-fold accuracy; only (method, target, seed) that are ``ok`` on both halves count. The unpruned
    row pools the baselines' test metrics that rows carry (one baseline per seed). Empty where ``trials`` do not
    hold both halves."""
    folds = _halves(trials)
    if not folds or "metrics" not in trials:
        return pd.DataFrame()
    halves, sizes = list(folds), [len(f) for f in folds.values()]
    ok = trials[trials["task"].isin(halves) & (trials["status"] == "ok")].assign(
        target=lambda d: d["compression"].map(target_label))
    per_seed = []
    for (method, target, seed), part in ok.groupby(["method", "target", "seed"]):
        if set(part["task"]) != set(halves):
            continue
        part = part.drop_duplicates("task").set_index("task").loc[halves]
        accuracy, fold_std, auc = _ten_folds(part["metric"], part["metrics"], sizes)
        base = _ten_folds(part["baseline_metric"], part.get("baseline_metrics", [None] * len(part)), sizes)
        per_seed.append({"method": method, "target": target, "seed": seed, "accuracy": accuracy,
                         "fold_std": fold_std, "auc": auc, "retention": accuracy / base[0], "baseline": base})
    if not per_seed:
        return pd.DataFrame()
    seeds = pd.DataFrame(per_seed)
    baselines = pd.DataFrame(seeds.drop_duplicates("seed")["baseline"].tolist(),
                             columns=["accuracy", "fold_std", "auc"])
    rows = [_summary(UNPRUNED, "1x", baselines, "")]  # one unpruned baseline per seed
    rows += [_summary(method, target, part, f"{part['retention'].mean():.3f}")
             for (method, target), part in seeds.groupby(["method", "target"], sort=False)]
    return pd.DataFrame(rows)
