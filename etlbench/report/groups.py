"""Who pays for compression (Hooker et al., "Characterising Bias in Compressed Models", 2020): per-group
statistics from the per-group test metrics each row carries (``group_metrics``, and its transfer baseline's
``baseline_group_metrics``; the groups are the dataset's own labels, :meth:`etlbench.tasks.Task.groups`).

* :func:`group_points`: one row per ok trial x attribute: the worst group's metric, the gap between the best and
  the worst group, and both for the unpruned transfer baseline of the same setting.
* :func:`group_summary`: per task x attribute x method x target, their means over seeds and the change against the
  baseline with its 95% confidence interval over seeds (paired: each trial against its own baseline); the unpruned
  baseline itself is the row of method ``unpruned`` at ``1x``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from etlbench.report.leaderboard import ci95, target_label

UNPRUNED = "unpruned"
_POINT = ["task", "attribute", "method", "target", "seed"]


def extremes(groups: dict[str, dict[str, float]], higher_is_better: bool) -> tuple[str, float, float]:
    """The worst group's name and metric, and the gap between the best and the worst group (never negative)."""
    metrics = {name: g["metric"] for name, g in groups.items()}
    worst = min(metrics, key=metrics.get) if higher_is_better else max(metrics, key=metrics.get)
    return worst, metrics[worst], float(max(metrics.values()) - min(metrics.values()))


def group_points(trials: pd.DataFrame) -> pd.DataFrame:
    """Per ok trial with per-group metrics, per attribute: worst group, its metric and the gap, the baseline's."""
    rows: list[dict[str, Any]] = []
    if "group_metrics" not in trials:
        return pd.DataFrame(columns=[*_POINT, "worst_group", "worst", "gap", "baseline_worst_group", "baseline_worst",
                                     "baseline_gap"])
    for _, t in trials[trials["status"] == "ok"].iterrows():
        own, base = t["group_metrics"], t.get("baseline_group_metrics")
        if not isinstance(own, dict):
            continue
        higher = bool(t["higher_is_better"])
        for attribute, groups in own.items():
            if len(groups) < 2:
                continue
            name, worst, gap = extremes(groups, higher)
            base_groups = base.get(attribute) if isinstance(base, dict) else None
            b_name, b_worst, b_gap = extremes(base_groups, higher) if base_groups and len(base_groups) > 1 \
                else (None, np.nan, np.nan)
            rows.append({"task": t["task"], "attribute": attribute, "method": t["method"],
                         "target": target_label(t["compression"]), "seed": t["seed"], "worst_group": name,
                         "worst": worst, "gap": gap, "baseline_worst_group": b_name, "baseline_worst": b_worst,
                         "baseline_gap": b_gap,
                         "groups": len(groups), "smallest_group": min(g["n"] for g in groups.values())})
    return pd.DataFrame(rows)


def group_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds of the worst-group metric and the gap, their change against the unpruned baseline (with
    95% CIs over seeds), per task x attribute x method x target; plus the baseline's own row (``unpruned``, 1x)."""
    points = group_points(trials)
    if points.empty:
        return pd.DataFrame(columns=["task", "attribute", "method", "target", "worst", "gap", "worst_change",
                                     "gap_change"])
    points = points.assign(worst_change=points["worst"] - points["baseline_worst"],
                           gap_change=points["gap"] - points["baseline_gap"])
    baseline = (points.drop_duplicates(["task", "attribute", "seed"])
                .assign(method=UNPRUNED, target="1x", worst_group=lambda d: d["baseline_worst_group"],
                        worst=lambda d: d["baseline_worst"], gap=lambda d: d["baseline_gap"], worst_change=0.0,
                        gap_change=0.0))
    both = pd.concat([baseline, points], ignore_index=True)
    keys = ["task", "attribute", "method", "target"]
    grouped = both.groupby(keys, sort=False)
    out = grouped[["worst", "gap", "worst_change", "gap_change"]].mean()
    out = out.join(grouped[["worst_change", "gap_change"]].agg(ci95).add_suffix("_ci95"))
    out = out.join(grouped.agg(seeds=("seed", "nunique"),
                               worst_group=("worst_group", lambda s: s.mode().iloc[0]),
                               smallest_group=("smallest_group", "min")))
    out = out.reset_index()
    out["log2_target"] = out["target"].map(lambda t: np.log2(float(t[:-1])) if t != "auto" else np.nan)
    return out.sort_values(["task", "attribute", "log2_target", "method"], na_position="last").reset_index(drop=True)


def fairest(summary: pd.DataFrame) -> pd.DataFrame:
    """Per task x attribute x target: the method whose compression widened the gap least (lowest mean gap change)."""
    pruned = summary[(summary["method"] != UNPRUNED) & summary["gap_change"].notna()]
    if pruned.empty:
        return pd.DataFrame(columns=["task", "attribute", "target", "method", "gap_change", "gap_change_ci95"])
    best = pruned.sort_values(["gap_change", "method"]).groupby(["task", "attribute", "target"], sort=False).head(1)
    return best[["task", "attribute", "target", "method", "gap_change", "gap_change_ci95"]] \
        .sort_values(["task", "attribute", "target"]).reset_index(drop=True)
