"""Leaderboard statistics from the tidy trial table (one row per trial, :meth:`ResultsStore.frame`).

* :func:`summarize`: one row per task x method x target compression: trials ok / failed / infeasible, the
  mean retention and metric with their 95% confidence intervals over seeds (Student's t), the mean achieved compression,
  parameters, MACs and latency with their reductions.
* :func:`method_scores`: one row per task x method: the area under the retention-versus-log2(compression)
  curve over the task's grid (the target compressions at which any method has a result), normalised by the
  grid's width, so that it is the mean retention over log-compression (on a one-point grid, the retention
  there); missing where a method lacks a point of the grid (failed or infeasible there), and then unranked.
* :func:`headline`: per task, at its largest target compressions, the method with the highest mean retention
  and the runner-up.
* :func:`pareto_front`: whether a point is on the front of retention against a cost (no other point has at
  least its retention at no more cost, one of them strictly).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

KEYS = ["task", "method", "target"]
COSTS = {"params": "params", "macs": "macs", "latency": "latency_ms"}
#: Test metrics beside a task's primary one that get trade-off figures of their own, where rows hold them (issue
#: 16: verification's ROC AUC); higher is better for each.
SECONDARY = ("auc",)
_MEANS = ["retention", "metric", "compression_achieved", "params", "macs", "latency_ms", "params_reduction",
          "macs_reduction", "latency_reduction", "latency_b32_reduction", "scoring_seconds"]


def target_label(compression: object) -> str:
    return "auto" if compression is None or (isinstance(compression, float) and np.isnan(compression)) \
        else f"{float(compression):g}x"


def ci95(values: pd.Series) -> float:
    """Half-width of the 95% confidence interval of the mean (Student's t); NaN for fewer than two values."""
    v = values.dropna()
    if len(v) < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def scoring_seconds(trials: pd.DataFrame) -> pd.Series:
    """Seconds to score the filters and prune: the trial's own, plus the shared stage it read where its row records
    one (ETL's probes, ``probe_seconds``: run once per task and seed, counted in every trial that uses them)."""
    own = trials["prune_seconds"] if "prune_seconds" in trials else pd.Series(np.nan, index=trials.index)
    return own + trials["probe_seconds"].fillna(0) if "probe_seconds" in trials else own


def summarize(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per task x method x target: status counts, means over seeds and the retention's 95% CI."""
    df = trials.assign(target=trials["compression"].map(target_label), scoring_seconds=scoring_seconds(trials))
    counts = df.pivot_table(index=KEYS, columns="status", values="trial_id", aggfunc="count", fill_value=0)
    counts = counts.reindex(columns=["ok", "failed", "infeasible"], fill_value=0).rename(columns=lambda s: f"n_{s}")
    ok = df[df["status"] == "ok"]
    means = ok.groupby(KEYS)[[c for c in _MEANS if c in ok]].mean().reindex(columns=_MEANS)
    ci = ok.groupby(KEYS)[["retention", "metric"]].agg(ci95).add_suffix("_ci95")
    out = counts.join(means, how="left").join(ci, how="left").reset_index()
    out["log2_target"] = out["target"].map(lambda t: np.log2(float(t[:-1])) if t != "auto" else np.nan)
    return out.sort_values(["task", "method", "log2_target"], na_position="last").reset_index(drop=True)


def method_scores(summary: pd.DataFrame) -> pd.DataFrame:
    """Per task x method: area under retention over log2(target) on the task's full grid, and the rank by it."""
    rows = []
    for task, grid_rows in summary[summary["target"] != "auto"].groupby("task"):
        grid = np.sort(grid_rows.dropna(subset=["retention"])["log2_target"].unique())  # where any method got one
        for method, m in grid_rows.groupby("method"):
            points = m.dropna(subset=["retention"]).set_index("log2_target")["retention"]
            if len(grid) == 0 or not set(grid) <= set(points.index):
                area = float("nan")
            elif len(grid) == 1:
                area = float(points.loc[grid[0]])
            else:
                area = float(np.trapezoid(points.loc[grid].to_numpy(), grid) / (grid[-1] - grid[0]))
            rows.append({"task": task, "method": method, "auc_retention": area, "grid_points": len(grid),
                         "points_ok": int(points.index.isin(grid).sum())})
    scores = pd.DataFrame(rows, columns=["task", "method", "auc_retention", "grid_points", "points_ok"])
    scores["rank"] = scores.groupby("task")["auc_retention"].rank(ascending=False, method="min")
    return scores


def overall_ranks(scores: pd.DataFrame) -> pd.DataFrame:
    """Each method's mean rank across the tasks it was ranked on (lower is better)."""
    ranked = scores.dropna(subset=["rank"])
    return (ranked.groupby("method")["rank"].agg(["mean", "count"])
            .rename(columns={"mean": "mean_rank", "count": "tasks_ranked"}).sort_values("mean_rank").reset_index())


def headline(summary: pd.DataFrame, largest: int = 2) -> pd.DataFrame:
    """Per task, at each of its ``largest`` target compressions: the best method by mean retention, with its
    reductions, and the runner-up (ties go to the method first in name order)."""
    points = summary[(summary["target"] != "auto") & summary["retention"].notna()]
    rows = []
    for _, part in points.groupby("task"):
        for log2 in np.sort(part["log2_target"].unique())[-largest:]:
            ranked = part[part["log2_target"] == log2].sort_values(["retention", "method"], ascending=[False, True])
            best = ranked.iloc[0].to_dict()
            second = ranked.iloc[1] if len(ranked) > 1 else None
            best.update(runner_up=None if second is None else second["method"],
                        runner_up_retention=np.nan if second is None else second["retention"],
                        methods_compared=len(ranked))
            rows.append(best)
    return pd.DataFrame(rows)


def pareto_front(quality: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Mask of the points that no other point dominates (quality at least as high, cost at most as high, one
    strictly); NaN points are never on the front."""
    q, c = np.asarray(quality, float), np.asarray(cost, float)
    valid = ~(np.isnan(q) | np.isnan(c))
    front = np.zeros(len(q), bool)
    for i in np.flatnonzero(valid):
        others = valid & (q >= q[i]) & (c <= c[i]) & ((q > q[i]) | (c < c[i]))
        front[i] = not others.any()
    return front


def with_pareto(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``pareto_params``, ``pareto_macs`` and ``pareto_latency`` per task (retention against cost)."""
    out = summary.copy()
    for name, column in COSTS.items():
        out[f"pareto_{name}"] = False
        for _, idx in out.groupby("task").groups.items():
            part = out.loc[idx]
            out.loc[idx, f"pareto_{name}"] = pareto_front(part["retention"].to_numpy(), part[column].to_numpy())
    return out


def task_class(task: str) -> type | None:
    """The registered class of ``task``, or None where it is not installed (a database from elsewhere)."""
    from etlbench.registry import TASKS, UnknownNameError

    try:
        return TASKS.get(task)
    except UnknownNameError:
        return None


def floor_name(task: str) -> str:
    """What the floor row (``linear_probe_metric``) of ``task`` is: the frozen source's own embedding for
    verification, the frozen linear probe of the unpruned network otherwise (or where the task is not installed)."""
    cls = task_class(task)
    return "frozen source embedding (untrained)" if cls and cls.kind == "verification" else "frozen linear probe"


def split_note(task: str) -> str:
    """How a task that splits by folds (verification) splits, for the page: which folds train, validate and test;
    empty for the other tasks (their splits are the dataset's)."""
    folds = getattr(task_class(task), "folds", None)
    if not folds:
        return ""

    def span(f: tuple[int, ...]) -> str:
        contiguous = len(f) > 1 and list(f) == list(range(min(f), max(f) + 1))
        return f"{min(f)}-{max(f)}" if contiguous else ",".join(map(str, f))

    return "folds " + ", ".join(f"{span(f)} {name}" for name, f in folds.items()) + \
        " (one half of a two-half protocol)"
