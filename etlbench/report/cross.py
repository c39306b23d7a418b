"""Cross-dataset results (:mod:`etlbench.evaluate`'s rows) beside the in-domain ones: how the retention of a
pruned model on another dataset of its task compares with its retention on its own test split."""

from __future__ import annotations

import pandas as pd

from etlbench.report.leaderboard import ci95, target_label

_KEYS = ["task", "dataset", "method", "target"]


def with_in_domain_groups(trials: pd.DataFrame, evaluations: pd.DataFrame) -> pd.DataFrame:
    """``trials`` where rows that predate per-group metrics take them from an in-domain evaluation of their model."""
    if evaluations.empty or "in_domain" not in evaluations:
        return trials
    inside = evaluations[(evaluations["in_domain"] == True) & (evaluations["status"] == "ok")]  # noqa: E712
    inside = inside.drop_duplicates("trial_id", keep="last").set_index("trial_id")
    out = trials.copy()
    for column in ("group_metrics", "baseline_group_metrics"):
        own = out[column] if column in out else pd.Series([None] * len(out), index=out.index)
        found = out["trial_id"].map(inside[column]) if column in inside else own
        out[column] = [o if isinstance(o, dict) and o else f for o, f in zip(own, found, strict=True)]
    return out


def cross_summary(trials: pd.DataFrame, evaluations: pd.DataFrame) -> pd.DataFrame:
    """Per task x other dataset x method x target: the mean cross-dataset retention and metric with the retention's
    95% CI over seeds, beside the mean in-domain retention of the same trials, and how the labels were read."""
    if evaluations.empty or "in_domain" not in evaluations:
        return pd.DataFrame(columns=_KEYS)
    other = evaluations[(evaluations["in_domain"] == False) & (evaluations["status"] == "ok")]  # noqa: E712
    own = trials[trials["status"] == "ok"][["trial_id", "retention"]].rename(columns={"retention": "in_domain"})
    rows = other[["trial_id", "task", "dataset", "method", "compression", "seed", "metric_name", "metric",
                  "baseline_metric", "retention", "note", "n"]].merge(own, on="trial_id")
    if rows.empty:
        return pd.DataFrame(columns=_KEYS)
    rows["target"] = rows["compression"].map(target_label)
    grouped = rows.groupby(_KEYS, sort=True)
    out = grouped.agg(metric_name=("metric_name", "first"), metric=("metric", "mean"),
                      baseline_metric=("baseline_metric", "mean"), retention=("retention", "mean"),
                      in_domain_retention=("in_domain", "mean"), seeds=("seed", "nunique"), n=("n", "first"),
                      note=("note", "first"))
    return out.join(grouped["retention"].agg(ci95).rename("retention_ci95")).reset_index()
