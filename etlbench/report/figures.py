"""Trade-off figures (seaborn styling, matplotlib drawing): task metric against parameters, MACs and latency.

Every figure draws from :func:`etlbench.report.leaderboard.summarize` (means over seeds, 95% intervals), so a
point is one method at one target compression. Each method keeps its colour (seaborn's colour-blind palette)
and marker in every figure, whatever else is drawn (:func:`method_style`); the unpruned transfer baseline is a
dashed horizontal line and the frozen linear probe of the unpruned network a dotted one; points on the Pareto
front of retention against that cost have a black edge. Where trials stored their anytime recovery curves, a
figure per task shows retention against recovery cost (samples and seconds), with the transfer baseline's own
training cost.
Sizes suit a paper column (3.3 in wide per panel), labels carry units and legends sit outside the axes.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns

from etlbench import plugins
from etlbench.report.groups import UNPRUNED, group_summary
from etlbench.report.leaderboard import COSTS, SECONDARY, floor_name, summarize, target_label, with_pareto

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]
_COST_LABELS = {"params": "parameters", "macs": "MACs per image", "latency": "latency at batch 1 (ms)"}
_METRIC_LABELS = {"accuracy": "accuracy", "mae_years": "MAE (years)", "mae_deg": "MAE (degrees)", "auc": "ROC AUC"}

#: Raster resolution: sharp on screen (vector SVG for print); at 150 the self-contained leaderboard.html of the
#: reference grid, with its group-gap and cross-dataset figures, passed 2 MB.
PNG_DPI = 100
#: Per format, the metadata that would stamp the time of writing into the file (PNG has none by default).
NO_DATE = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}


def method_style(method: str) -> tuple[tuple[float, float, float], str]:
    """The colour and marker that belong to ``method`` in every figure of every report: a built-in's by its place
    in :mod:`etlbench.plugins`, another's by a hash of its name, so that adding a method changes no other's style.
    Ten colours (seaborn's colour-blind palette) and ten markers: the first hundred places are all different."""
    builtins = list(plugins.METHODS)
    place = (builtins.index(method) if method in builtins else
             len(builtins) + zlib.crc32(method.encode()) % (100 - len(builtins)))
    palette = sns.color_palette("colorblind", 10)
    return palette[place % 10], _MARKERS[(place + place // 10) % len(_MARKERS)]


def method_styles(methods: list[str]) -> dict[str, tuple[tuple[float, float, float], str]]:
    """:func:`method_style` of each method."""
    return {m: method_style(m) for m in set(methods)}


def _metric_label(name: str, higher_is_better: bool) -> str:
    return f"{_METRIC_LABELS.get(name, name)} ({'higher' if higher_is_better else 'lower'} is better)"


#: Drawn in colour whatever their rank, where a task's figure would hold too many methods to read.
ALWAYS_SHOWN = ("etl", "random", "uniform", "scratch")
BEST_SHOWN = 3  # and the best this many others, by mean retention over the task's targets


def highlighted(summary: pd.DataFrame) -> set[str]:
    """The methods one task's figure draws in colour: all where there are at most seven, else
    :data:`ALWAYS_SHOWN` (the paper's method and the controls) and the :data:`BEST_SHOWN` best others."""
    methods = set(summary["method"])
    if len(methods) <= len(ALWAYS_SHOWN) + BEST_SHOWN:
        return methods
    ranked = summary[~summary["method"].isin(ALWAYS_SHOWN)].groupby("method")["retention"].mean()
    return (methods & set(ALWAYS_SHOWN)) | set(ranked.sort_values(ascending=False).index[:BEST_SHOWN])


def draw_tradeoff(ax: plt.Axes, summary: pd.DataFrame, trials: pd.DataFrame, cost: str,
                  styles: dict[str, tuple]) -> None:
    """One task's metric against one cost on ``ax``: a line per method over its targets with a 95% band; with
    many methods the others than :func:`highlighted` are thin grey lines under one legend entry."""
    column = COSTS[cost]
    shown, other_label = highlighted(summary), "other methods"
    for method, rows in summary.dropna(subset=["metric"]).groupby("method"):
        line = rows[rows["target"] != "auto"].sort_values(column)
        if method not in shown:
            ax.plot(line[column], line["metric"], color="0.75", lw=0.8, label=other_label, zorder=1)
            other_label = "_nolegend_"
            continue
        colour, marker = styles[method]
        ax.plot(line[column], line["metric"], color=colour, marker=marker, label=method, lw=1.4, ms=5)
        if line["metric_ci95"].notna().any():
            ci = line["metric_ci95"].fillna(0)
            ax.fill_between(line[column], line["metric"] - ci, line["metric"] + ci, color=colour, alpha=0.2, lw=0)
        auto = rows[rows["target"] == "auto"]
        ax.scatter(auto[column], auto["metric"], color=colour, marker="*", s=90, zorder=3)
        front = rows[rows[f"pareto_{cost}"]]
        ax.scatter(front[column], front["metric"], facecolors="none", edgecolors="black", s=70, lw=1.0, zorder=4)
    baseline = trials["baseline_metric"].dropna()
    if len(baseline):
        ax.axhline(baseline.mean(), color="0.3", ls="--", lw=1.0, label="transfer baseline")
    probe = trials["linear_probe_metric"].dropna() if "linear_probe_metric" in trials else pd.Series(dtype=float)
    if len(probe):
        ax.axhline(probe.mean(), color="0.3", ls=":", lw=1.0, label=floor_name(trials["task"].iloc[0]))
    _cost_axis(ax, cost, summary[column].dropna().to_numpy())


def curve_points(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per anytime evaluation of each finished trial (its ``recovery_curve``): the recovery samples and
    seconds spent so far and the retention of the model that val had selected by then."""
    rows = []
    for _, t in trials[trials["status"] == "ok"].iterrows():
        curve, key = t.get("recovery_curve"), f"best_test_{t['metric_name']}"
        for i, point in enumerate(curve if isinstance(curve, list) else []):
            if point.get(key) is None:
                continue
            rows.append({"task": t["task"], "method": t["method"], "target": target_label(t["compression"]),
                         "seed": t["seed"], "point": i, "samples": point["samples"], "seconds": point["seconds"],
                         "retention": _retention(t, point[key]),
                         "probe_retention": _retention(t, t.get("linear_probe_metric")),
                         "baseline_samples": t.get("baseline_samples_seen"),
                         "baseline_seconds": t.get("baseline_train_seconds")})
    return pd.DataFrame(rows)


def _retention(t: pd.Series, value: float | None) -> float:
    """A metric of row ``t``'s task as a retention against its baseline (higher is better; NaN where missing)."""
    if value is None or pd.isna(value):
        return float("nan")
    return value / t["baseline_metric"] if t["higher_is_better"] else t["baseline_metric"] / value


def draw_recovery_cost(axes: list[plt.Axes], points: pd.DataFrame, styles: dict[str, tuple],
                       targets: tuple[str, ...]) -> None:
    """Retention against recovery cost (samples, then seconds), a line per method and target (means over seeds
    at each anytime evaluation), with the transfer baseline's own training cost and the linear probe marked."""
    for ax, cost in zip(axes, ("samples", "seconds"), strict=True):
        for (method, target), rows in points[points["target"].isin(targets)].groupby(["method", "target"]):
            mean = rows.groupby("point")[[cost, "retention"]].mean()
            mean = mean[mean[cost] > 0]
            ax.plot(mean[cost], mean["retention"], color=styles[method][0], marker=styles[method][1], ms=3, lw=1.2,
                    ls="-" if target == targets[0] else "--", label=f"{method} {target}")
        base = points[f"baseline_{cost}"].dropna()
        if len(base):
            ax.axvline(base.mean(), color="0.3", ls="-.", lw=1.0, label="transfer baseline's training")
        probe = points["probe_retention"].dropna()
        if len(probe):
            ax.axhline(probe.mean(), color="0.3", ls=":", lw=1.0, label=floor_name(points["task"].iloc[0]))
        ax.axhline(1.0, color="0.3", ls="--", lw=1.0)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())
        ax.xaxis.set_major_formatter(mticker.EngFormatter(sep=""))
        ax.set_xlabel(f"recovery {'samples seen' if cost == 'samples' else 'seconds'}, log scale")
        ax.set_ylabel("retention (pruned / baseline quality)")


def draw_group_gaps(groups: pd.DataFrame, styles: dict[str, tuple]) -> plt.Figure:
    """One task's best-worst group gap against target compression, a panel per attribute and a line per method,
    each starting from the unpruned baseline's gap at 1x (:func:`etlbench.report.groups.group_summary`)."""
    attributes = sorted(groups["attribute"].unique())
    fig, axes = plt.subplots(1, len(attributes), figsize=(3.0 * len(attributes), 2.6), squeeze=False)
    points = groups[groups["target"] != "auto"]
    for ax, attribute in zip(axes[0], attributes, strict=True):
        part = points[points["attribute"] == attribute]
        start = part[part["method"] == UNPRUNED]
        for method, rows in part[part["method"] != UNPRUNED].groupby("method"):
            line = pd.concat([start, rows]).sort_values("log2_target")
            colour, marker = styles.get(method, method_style(method))
            ax.plot(2 ** line["log2_target"], line["gap"], color=colour, marker=marker, label=method, lw=1.2, ms=4)
        ax.axhline(start["gap"].mean(), color="0.3", ls="--", lw=1.0, label="transfer baseline")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.set_xlabel("target compression (parameters)")
        ax.set_title(attribute.replace("_", " "))
        ax.set_ylabel("best - worst group" if ax is axes[0][0] else "")
    fig.suptitle(f"{groups['task'].iloc[0].replace('_', ' ')}: who pays for compression", y=1.02)
    legend_outside(fig, list(axes[0]), ncol=4)
    return fig


def draw_cross_dataset(cross: pd.DataFrame, styles: dict[str, tuple]) -> plt.Figure:
    """One task's retention on each other dataset against its in-domain retention, a panel per dataset, a point per
    method and target (labelled with the target), the diagonal where both are equal."""
    datasets = sorted(cross["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.3 * len(datasets), 3.0), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        part = cross[cross["dataset"] == dataset]
        for method, rows in part.groupby("method"):
            colour, marker = styles.get(method, method_style(method))
            ax.errorbar(rows["in_domain_retention"], rows["retention"], yerr=rows["retention_ci95"].fillna(0),
                        color=colour, marker=marker, ls="none", ms=5, capsize=2, label=method)
            for _, r in rows.iterrows():
                ax.annotate(r["target"], (r["in_domain_retention"], r["retention"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        values = pd.concat([part["in_domain_retention"], part["retention"]]).dropna()
        lo, hi = (values.min(), values.max()) if len(values) else (0.0, 1.0)
        ax.plot([lo, hi], [lo, hi], color="0.5", ls="--", lw=0.8, label="cross = in-domain")
        ax.set_xlabel("in-domain retention")
        ax.set_ylabel("cross-dataset retention" if ax is axes[0][0] else "")
        ax.set_title(f"on {dataset}")
    fig.suptitle(f"{cross['task'].iloc[0].replace('_', ' ')}: retention on other datasets", y=1.02)
    legend_outside(fig, list(axes[0]), ncol=4)
    return fig


def _cost_axis(ax: plt.Axes, cost: str, values: np.ndarray) -> None:
    """Log scale where the costs span more than 3x, plain otherwise; few, readable tick labels."""
    wide = len(values) > 0 and values.min() > 0 and values.max() / values.min() > 3
    ax.set_xscale("log" if wide else "linear")
    if wide:
        ax.xaxis.set_major_locator(mticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    else:
        ax.xaxis.set_major_locator(mticker.MaxNLocator(4))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:.3g}") if cost == "latency"
                                 else mticker.EngFormatter(sep=""))
    ax.set_xlabel(_COST_LABELS[cost] + (", log scale" if wide else ""))


def legend_outside(fig: plt.Figure, axes: list[plt.Axes], ncol: int, above: bool = False) -> None:
    """One legend for ``axes`` (each label once), outside every axes: under the figure, or above it with
    ``above``, never on the data. Lays the figure out first; savefig's ``bbox_inches="tight"`` keeps it."""
    fig.tight_layout()
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="lower center" if above else "upper center",
                   bbox_to_anchor=(0.5, 1.0 if above else 0.0), ncol=min(ncol, len(entries)), frameon=False,
                   fontsize="x-small")


def as_metric(trials: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows whose test ``metrics`` and ``baseline_metrics`` both hold ``name`` (a :data:`SECONDARY` metric), with
    it as their metric and their retention against their baseline's (a row without its baseline's is left out, not
    drawn without a retention); without a floor line (rows keep the floor's primary metric only)."""
    if not {"metrics", "baseline_metrics"} <= set(trials):
        return trials.iloc[0:0]
    def holds(column: str) -> pd.Series:
        return trials[column].map(lambda m: isinstance(m, dict) and name in m)

    part = trials[holds("metrics") & holds("baseline_metrics")].copy()
    part["metric"] = part["metrics"].map(lambda m: m[name])
    part["baseline_metric"] = part["baseline_metrics"].map(lambda m: m[name])
    part["retention"] = part["metric"] / part["baseline_metric"]
    return part.assign(metric_name=name, higher_is_better=True, linear_probe_metric=np.nan)


def _task_meta(trials: pd.DataFrame) -> tuple[str, bool]:
    first = trials.dropna(subset=["metric_name"]).iloc[0]
    return str(first["metric_name"]), bool(first["higher_is_better"])


def write_figures(trials: pd.DataFrame, out_dir: str | Path, formats: tuple[str, ...] = ("png", "svg"),
                  retention_at: str = "16x", cross: pd.DataFrame | None = None) -> list[Path]:
    """Per task one figure per cost (and per :data:`SECONDARY` metric its rows hold), one grid of all tasks x costs,
    and a bar chart of retention at ``retention_at``; returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)
    summary = with_pareto(summarize(trials))
    styles = method_styles(sorted(summary["method"].unique()))
    tasks = sorted(summary["task"].unique())
    written: list[Path] = []

    def save(fig: plt.Figure, stem: str) -> None:
        for fmt in formats:
            path = out_dir / f"{stem}.{fmt}"
            # No date, and SVG ids salted by the name: the same data gives the same file, so committed figures
            # change only where their data does.
            with plt.rc_context({"svg.hashsalt": stem}):
                fig.savefig(path, dpi=PNG_DPI, bbox_inches="tight", metadata=NO_DATE.get(fmt))
            written.append(path)
        plt.close(fig)

    for label, part in [("metric", trials), *((name, as_metric(trials, name)) for name in SECONDARY)]:
        part_summary = summary if label == "metric" else with_pareto(summarize(part))
        for task in sorted(part_summary["task"].unique()):
            name, higher = _task_meta(part[part["task"] == task])
            for cost in COSTS:
                fig, ax = plt.subplots(figsize=(3.3, 2.6))
                draw_tradeoff(ax, part_summary[part_summary["task"] == task], part[part["task"] == task], cost,
                              styles)
                ax.set_title(task.replace("_", " "))
                ax.set_ylabel(_metric_label(name, higher))
                legend_outside(fig, [ax], ncol=2)
                save(fig, f"{task}-{label}-vs-{cost}")

    fig, axes = plt.subplots(len(COSTS), len(tasks), figsize=(3.0 * len(tasks), 2.4 * len(COSTS)), squeeze=False)
    for j, task in enumerate(tasks):
        name, higher = _task_meta(trials[trials["task"] == task])
        for i, cost in enumerate(COSTS):
            ax = axes[i, j]
            draw_tradeoff(ax, summary[summary["task"] == task], trials[trials["task"] == task], cost, styles)
            ax.set_title(task.replace("_", " ") if i == 0 else "")
            ax.set_ylabel(_metric_label(name, higher) if i == 0 else _METRIC_LABELS.get(name, name))
    legend_outside(fig, list(axes.flat), ncol=max(2, 2 * len(tasks)), above=True)
    save(fig, "tradeoffs-all-tasks")

    points = curve_points(trials) if "recovery_curve" in trials else pd.DataFrame()
    for task in sorted(points["task"].unique()) if len(points) else []:
        present = [t for t in summary[summary["task"] == task]["target"].unique() if t != "auto"]
        targets = tuple(t for t in ("4x", "16x") if t in present) or tuple(sorted(present, key=lambda t: float(t[:-1])))
        fig, axes = plt.subplots(1, 2, figsize=(6.6, 2.6), sharey=True)
        draw_recovery_cost(list(axes), points[points["task"] == task], styles, targets[:2])
        axes[0].set_title(f"{task.replace('_', ' ')}: retention against recovery cost")
        legend_outside(fig, list(axes), ncol=4)
        save(fig, f"{task}-retention-vs-recovery-cost")

    groups = group_summary(trials)
    for task in sorted(groups["task"].unique()):
        fig = draw_group_gaps(groups[groups["task"] == task], styles)
        save(fig, f"{task}-group-gap")

    cross = cross if cross is not None else pd.DataFrame(columns=["task"])
    for task in sorted(cross["task"].unique()):
        save(draw_cross_dataset(cross[cross["task"] == task], styles), f"{task}-cross-dataset")

    at = summary[summary["target"] == retention_at].dropna(subset=["retention"])
    if len(at):
        save(draw_retention_at(at, tasks, styles, retention_at), f"retention-at-{retention_at}")
    return written


def draw_retention_at(at: pd.DataFrame, tasks: list[str], styles: dict[str, tuple], target: str) -> plt.Figure:
    """Retention of every method at one ``target``: a panel per task, its methods named and sorted, legible with
    any number of methods."""
    height = max(2.2, 0.9 + 0.18 * at.groupby("task").size().max())
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.4 * len(tasks) + 0.8, height), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = at[at["task"] == task].sort_values("retention")
        ax.barh(np.arange(len(rows)), rows["retention"], xerr=rows["retention_ci95"].fillna(0),
                color=[styles[m][0] for m in rows["method"]], capsize=2)
        ax.set_yticks(np.arange(len(rows)), rows["method"])
        ax.axvline(1.0, color="0.3", ls="--", lw=1.0)
        ax.set_title(task.replace("_", " "))
        ax.set_xlabel("retention")
    fig.suptitle(f"retention at {target} fewer parameters (pruned / baseline quality)", y=1.0)
    fig.tight_layout()
    return fig
