"""The leaderboard as Markdown (GitHub-flavoured) and as one self-contained HTML page.

Per task: the reference rows (the unpruned transfer baseline and the frozen linear probe, means over seeds),
then one row per method with its retention (mean ± 95% CI over seeds) at every target compression, the area
under its retention-versus-log2(compression) curve and its rank; failed and infeasible points say so. Then
every point in detail (status counts, reductions, Pareto membership, seconds to score and prune). Overall: the
mean rank across tasks. The papers' published figures close the page, marked as published, not measured here.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from etlbench.report.groups import UNPRUNED, fairest, group_summary
from etlbench.report.leaderboard import (
    SECONDARY,
    floor_name,
    headline,
    method_scores,
    overall_ranks,
    split_note,
    summarize,
    with_pareto,
)
from etlbench.report.protocol import ten_fold_table

#: The published reference points with their citations: baselines/ at the top of the repository.
PUBLISHED = Path(__file__).resolve().parents[2] / "baselines" / "published.yaml"


def published() -> list[dict[str, Any]]:
    """The published reference points (``baselines/published.yaml``), or one row saying they were not found
    (a non-editable install has no repository around it)."""
    if not PUBLISHED.is_file():
        return [{"source": f"not found: {PUBLISHED} (read the published figures in the repository's baselines/)"}]
    return yaml.safe_load(PUBLISHED.read_text())


def _num(x: float, spec: str = ".4g") -> str:
    return "" if pd.isna(x) else format(x, spec)


def _pct(x: float) -> str:
    return _num(x, ".1%")


def _point(row: pd.Series) -> str:
    if row["n_ok"] == 0:
        return "failed" if row["n_failed"] else ("infeasible" if row["n_infeasible"] else "")
    text = _retention(row["retention"], row["retention_ci95"])
    lost = [f"{int(row[c])} {c[2:]}" for c in ("n_failed", "n_infeasible") if row[c]]
    return text + (f" ({', '.join(lost)})" if lost else "")


def _targets(summary: pd.DataFrame) -> list[str]:
    order = summary.drop_duplicates("target").sort_values("log2_target", na_position="last")
    return list(order["target"])


def task_table(summary: pd.DataFrame, scores: pd.DataFrame, task: str) -> pd.DataFrame:
    """One row per method: retention at every target, area under the curve, rank (best first)."""
    part = summary[summary["task"] == task]
    table = part.pivot(index="method", columns="target", values="point").reindex(columns=_targets(part))
    s = scores[scores["task"] == task].set_index("method")
    table.insert(0, "rank", s["rank"].reindex(table.index))
    table.insert(1, "AUC retention", s["auc_retention"].reindex(table.index).map(
        lambda v: _num(v, ".3f")))
    table = table.sort_values("rank", na_position="last")
    table["rank"] = table["rank"].map(lambda v: "" if pd.isna(v) else f"{int(v)}")
    return table.rename_axis(columns=None).reset_index().fillna("")  # the pivot's "target" name is no column


def detail_table(summary: pd.DataFrame, task: str) -> pd.DataFrame:
    part = summary[summary["task"] == task]
    pareto = part[["pareto_params", "pareto_macs", "pareto_latency"]].apply(
        lambda r: "".join(k for k, v in zip("PML", r, strict=True) if v), axis=1)
    return pd.DataFrame({
        "method": part["method"], "target": part["target"], "ok/failed/infeasible": part.apply(
            lambda r: f"{r['n_ok']}/{r['n_failed']}/{r['n_infeasible']}", axis=1),
        "retention": part.apply(_point, axis=1),
        "metric": part["metric"].map(_num), "achieved x": part["compression_achieved"].map(lambda v: _num(v, ".2f")),
        **_reductions(part), "Pareto (P/M/L)": pareto,
        "scoring s": part["scoring_seconds"].map(lambda v: _num(v, ".1f"))}).reset_index(drop=True)


def _retention(value: float, ci: float) -> str:
    return f"{value:.3f}" + ("" if pd.isna(ci) else f" ± {ci:.3f}")


def _retentions(points: pd.DataFrame) -> list[str]:
    return [_retention(v, c) for v, c in zip(points["retention"], points["retention_ci95"], strict=True)]


_REDUCTIONS = {"params red.": "params_reduction", "MACs red.": "macs_reduction",
               "latency red. b1": "latency_reduction", "latency red. b32": "latency_b32_reduction"}


def _reductions(points: pd.DataFrame, labels: tuple[str, ...] = tuple(_REDUCTIONS)) -> dict[str, pd.Series]:
    """The reduction columns of ``summarize`` (a NaN column when nothing was measured), as percentages."""
    return {label: points[_REDUCTIONS[label]].map(_pct) for label in labels}


def headline_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The best method per task at its two largest targets, with the runner-up to judge the margin."""
    top = headline(summary)
    if top.empty:
        return top
    return pd.DataFrame({
        "task": top["task"], "target": top["target"], "best": top["method"],
        "retention": _retentions(top), "runner-up": top["runner_up"].fillna(""),
        "its retention": top["runner_up_retention"].map(lambda v: _num(v, ".3f")),
        **_reductions(top, ("params red.", "latency red. b1", "latency red. b32"))})


def operating_points(summary: pd.DataFrame) -> pd.DataFrame:
    """The budget-free points (target ``auto``: the method chose its own compression, e.g. ETL's epsilon)."""
    auto = summary[(summary["target"] == "auto") & (summary["n_ok"] > 0)]
    return pd.DataFrame({
        "task": auto["task"], "method": auto["method"],
        "achieved x": auto["compression_achieved"].map(lambda v: _num(v, ".1f")), **_reductions(auto),
        "retention": _retentions(auto)}).reset_index(drop=True)


def reference_rows(trials: pd.DataFrame, task: str) -> pd.DataFrame:
    part = trials[trials["task"] == task]
    rows = [("transfer baseline (unpruned)", part["baseline_metric"])]
    if "linear_probe_metric" in part:
        rows.append((floor_name(task), part["linear_probe_metric"]))
    return pd.DataFrame([{"reference": name, "metric (mean over seeds)": f"{values.dropna().mean():.4g}",
                          "seeds": int(part.loc[values.notna(), "seed"].nunique())}
                         for name, values in rows if values.notna().any()])


def _change(value: float, ci: float) -> str:
    return "" if pd.isna(value) else f"{value:+.4g}" + ("" if pd.isna(ci) else f" ± {ci:.2g}")


def fairest_table(groups: pd.DataFrame) -> pd.DataFrame:
    """Per task, attribute and target: the method that widened the best-worst gap least, its change ± 95% CI."""
    best = fairest(groups)
    return pd.DataFrame({**{c: best[c] for c in ("task", "attribute", "target", "method")},
                         "gap change": [_change(v, c) for v, c in zip(best["gap_change"], best["gap_change_ci95"],
                                                                        strict=True)]})


def group_table(groups: pd.DataFrame, task: str) -> pd.DataFrame:
    """One task's per-group rows: worst group and best-worst gap per attribute, method and target, and their change
    against the unpruned baseline (mean ± 95% CI over seeds)."""
    part = groups[groups["task"] == task]
    if part.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "attribute": part["attribute"], "method": part["method"], "target": part["target"],
        "worst group": part["worst_group"], "worst": part["worst"].map(_num), "gap": part["gap"].map(_num),
        "worst change": [_change(v, c) if m != UNPRUNED else "" for v, c, m in
                         zip(part["worst_change"], part["worst_change_ci95"], part["method"], strict=True)],
        "gap change": [_change(v, c) if m != UNPRUNED else "" for v, c, m in
                       zip(part["gap_change"], part["gap_change_ci95"], part["method"], strict=True)],
        "seeds": part["seeds"], "smallest group": part["smallest_group"]}).reset_index(drop=True)


def cross_table(cross: pd.DataFrame, task: str) -> pd.DataFrame:
    """One task's cross-dataset rows: retention on each other dataset (mean ± 95% CI over seeds) beside the same
    trials' in-domain retention."""
    part = cross[cross["task"] == task] if len(cross) else cross
    if part.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "dataset": part["dataset"], "method": part["method"], "target": part["target"],
        "metric": [f"{m} {_num(v)}" for m, v in zip(part["metric_name"], part["metric"], strict=True)],
        "unpruned": part["baseline_metric"].map(_num),
        "cross retention": [_retention(v, c) for v, c in zip(part["retention"], part["retention_ci95"], strict=True)],
        "in-domain retention": part["in_domain_retention"].map(lambda v: _num(v, ".3f")), "seeds": part["seeds"],
        "images": part["n"], "labels": part["note"]}).reset_index(drop=True)


def build(trials: pd.DataFrame, cross: pd.DataFrame | None = None) -> dict[str, Any]:
    """Everything the pages show, as DataFrames: summary (one row per point), scores, overall ranks, tables."""
    summary = with_pareto(summarize(trials))
    summary["point"] = summary.apply(_point, axis=1)
    scores = method_scores(summary)
    tasks = sorted(summary["task"].unique())
    groups = group_summary(trials)
    meta = trials.dropna(subset=["metric_name"]).drop_duplicates("task").set_index("task")
    return {"summary": summary, "scores": scores, "overall": overall_ranks(scores), "tasks": tasks,
            "metric": {t: (meta.loc[t, "metric_name"], bool(meta.loc[t, "higher_is_better"])) if t in meta.index
                       else ("", True) for t in tasks},
            "headline": headline_table(summary), "operating_points": operating_points(summary),
            "task_tables": {t: task_table(summary, scores, t) for t in tasks},
            "details": {t: detail_table(summary, t) for t in tasks},
            "references": {t: reference_rows(trials, t) for t in tasks}, "published": published(),
            "groups": {t: group_table(groups, t) for t in tasks}, "fairest": fairest_table(groups),
            "cross": {t: cross_table(cross if cross is not None else pd.DataFrame(), t) for t in tasks},
            "ten_fold": ten_fold_table(trials), "synthetic": _synthetic_warning(trials)}


def _synthetic_warning(trials: pd.DataFrame) -> str:
    if "synthetic" not in trials or not trials["synthetic"].fillna(False).astype(bool).any():
        return ""
    tasks = sorted(trials.loc[trials["synthetic"].fillna(False).astype(bool), "task"].unique())
    return (f"SYNTHETIC DATA for {', '.join(tasks)}: procedural faces, not a real dataset; these figures test the "
            "pipeline and are not comparable to published results.")


def markdown_table(df: pd.DataFrame) -> str:
    cells = [[str(c) for c in df.columns]] + [[str(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join([lines[0], "|" + "---|" * len(df.columns), *lines[1:]])


def _heading(task: str, metric: tuple[str, bool]) -> str:
    note = split_note(task)
    return f"{task} — {metric[0]}, {'higher' if metric[1] else 'lower'} is better" + (f"; {note}" if note else "")


_INTRO = ("Retention is the pruned model's quality over the unpruned transfer baseline's (baseline / pruned for "
          "errors), mean ± 95% CI over seeds. AUC retention: the mean retention over log2(compression) on the "
          "task's grid of targets; a method missing a point of the grid has none and no rank. Pareto: on the front "
          "of retention against parameters (P), MACs (M) or batch-1 latency (L).")


def _tradeoffs(task: str, cost: str = "") -> tuple[str, ...]:
    """How the names of a task's trade-off figures (its metric, and each :data:`SECONDARY` one) begin."""
    return tuple(f"{task}-{label}-vs-{cost}" for label in ("metric", *SECONDARY))


def to_markdown(report: dict[str, Any], title: str, conditions: str, figures: list[str]) -> str:
    out = [f"# {title}", "", conditions, "", *([f"**{report['synthetic']}**", ""] if report["synthetic"] else []),
           _INTRO, "", "## Overall: mean rank across tasks", ""]
    out += [markdown_table(report["overall"]) if len(report["overall"]) else "No method has a complete grid yet.", ""]
    for heading, key in _SUMMARIES:
        if len(report[key]):
            out += [f"## {heading}", "", markdown_table(report[key]), ""]
    for task in report["tasks"]:
        out += [f"## {_heading(task, report['metric'][task])}", ""]
        if len(report["references"][task]):
            out += [markdown_table(report["references"][task]), ""]
        out += [markdown_table(report["task_tables"][task]), "", f"<details><summary>{_DETAILS}</summary>", "",
                markdown_table(report["details"][task]), "", "</details>", ""]
        out += [f"![{Path(f).stem}]({f})" for f in figures if Path(f).name.startswith(_tradeoffs(task, "params"))]
        out += [""]
        if len(report["cross"][task]):
            out += ["Cross-dataset: the same models on other datasets of the task (`etlbench evaluate`)", "",
                    markdown_table(report["cross"][task]), ""]
            out += [f"![{Path(f).stem}]({f})" for f in figures if Path(f).name.startswith(f"{task}-cross-dataset")]
            out += [""]
        if len(report["groups"][task]):
            out += ["<details><summary>who pays for compression: per-group metric</summary>", "", _GROUPS, "",
                    markdown_table(report["groups"][task]), "", "</details>", ""]
            out += [f"![{Path(f).stem}]({f})" for f in figures if Path(f).name.startswith(f"{task}-group-gap")]
            out += [""]
    out += ["## Published figures (from the papers, not measured here)", "",
            markdown_table(_published(report)), ""]
    return "\n".join(out)


_DETAILS = ("every point (scoring s: seconds to score the filters and prune, ETL's shared probes included, mean over "
            "seeds, on the trial's threads)")

_SUMMARIES = (("Headline: the best method at the largest compressions", "headline"),
              ("Budget-free operating points (the method chose its compression)", "operating_points"),
              ("Fairest compression: the method that widened the best-worst group gap least", "fairest"),
              ("LFW's ten folds: both halves of the verification protocol (accuracy: mean ± 95% CI over seeds; "
               "fold std: over the ten folds; AUC: mean of the halves')", "ten_fold"))

_GROUPS = ("The groups are the dataset's own labels (UTKFace's race and gender, age bands of its ages, FER2013's "
           "classes, bands of AFLW2000's |yaw|), on the test split. Worst: the worst group's metric; gap: best minus "
           "worst group (never negative); changes are against the unpruned transfer baseline of the same seed "
           "(mean ± 95% CI over seeds). Small groups are noisy: see the smallest group's size.")

#: Click a header to sort its table by that column (its index among its own row's cells); again to reverse. A
#: cell that starts with a number ("0.97 ± 0.01", "95.3%", "16x") sorts by that number, before text cells
#: ("failed", "auto"); blank cells stay last either way.
_SORT_JS = r"""
const sortKey = cell => {
  const t = cell ? cell.textContent.trim() : '';
  const m = t.match(/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?/i);
  return t === '' ? [2, ''] : m ? [0, parseFloat(m[0])] : [1, t];
};
const compare = (x, y) => typeof x === 'number' ? x - y : x.localeCompare(y, undefined, {numeric: true});
document.querySelectorAll('table.sortable > thead th').forEach(th => th.addEventListener('click', () => {
  const table = th.closest('table'), i = th.cellIndex, body = table.tBodies[0];
  if (!body) return;
  const dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
  table.tHead.querySelectorAll('th').forEach(h => delete h.dataset.dir);
  th.dataset.dir = dir;
  const rows = Array.from(body.rows).map(r => [sortKey(r.cells[i]), r]);
  rows.sort(([a], [b]) => a[0] - b[0] || (a[0] === 2 ? 0 : (dir === 'asc' ? 1 : -1) * compare(a[1], b[1])));
  rows.forEach(([, r]) => body.appendChild(r));
}));
"""


def _published(report: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(report["published"]).astype(object).fillna("")


def _html_table(df: pd.DataFrame) -> str:
    """A sortable table of ``df``'s columns only: no index, and no name of the column axis (even with
    ``index=False``, pandas writes that name as an extra first header and an empty header cell in every row)."""
    return df.rename_axis(index=None, columns=None).to_html(index=False, classes="sortable", border=0, escape=True)


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"></figure>'


def to_html(report: dict[str, Any], title: str, conditions: str, figures: list[Path]) -> str:
    """One section of the page (an experiment on a backbone): its tables and embedded figures."""
    warning = f"<p><strong>{html.escape(report['synthetic'])}</strong></p>" if report["synthetic"] else ""
    parts = [f"<section><h1>{html.escape(title)}</h1>", f"<p>{html.escape(conditions)}</p>", warning,
             f"<p>{html.escape(_INTRO)}</p>",
             "<h2>Overall: mean rank across tasks</h2>", _html_table(report["overall"])]
    parts += [f"<h2>{html.escape(heading)}</h2>{_html_table(report[key])}" for heading, key in _SUMMARIES
              if len(report[key])]
    pngs = [f for f in figures if f.suffix == ".png"]
    for task in report["tasks"]:
        parts += [f"<h2>{html.escape(_heading(task, report['metric'][task]))}</h2>",
                  _html_table(report["references"][task]) if len(report["references"][task]) else "",
                  _html_table(report["task_tables"][task]), f"<details><summary>{html.escape(_DETAILS)}</summary>",
                  _html_table(report["details"][task]), "</details>"]
        parts += [_embed(f) for f in pngs if f.name.startswith(_tradeoffs(task))]
        if len(report["cross"][task]):
            parts += ["<p>Cross-dataset: the same models on other datasets of the task (etlbench evaluate)</p>",
                      _html_table(report["cross"][task])]
            parts += [_embed(f) for f in pngs if f.name.startswith(f"{task}-cross-dataset")]
        if len(report["groups"][task]):
            parts += ["<details><summary>who pays for compression: per-group metric</summary>",
                      f"<p>{html.escape(_GROUPS)}</p>", _html_table(report["groups"][task]), "</details>"]
            parts += [_embed(f) for f in pngs if f.name.startswith(f"{task}-group-gap")]
    parts += ["<h2>All tasks</h2>"] + [_embed(f) for f in pngs if not f.name.startswith(tuple(report["tasks"]))]
    parts += ["<h2>Published figures (from the papers, not measured here)</h2>",
              _html_table(_published(report)), "</section>"]
    return "".join(parts)


def html_page(sections: list[str], left_out: list[str]) -> str:
    """The self-contained page: the rows left out (if any), then every section."""
    notes = ("<h2>Rows left out</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in left_out) + "</ul>"
             if left_out else "")
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}th,td{padding:.25em .6em;border-bottom:1px solid #ddd;"
             "text-align:left}th{cursor:pointer;background:#f4f4f4}th[data-dir=asc]::after{content:' ▲'}"
             "th[data-dir=desc]::after{content:' ▼'}img{max-width:100%}figure{display:inline-block;"
             "margin:.5em}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>etlbench leaderboard</title>"
            f"<style>{style}</style></head><body>{notes}{''.join(sections)}<script>{_SORT_JS}</script></body></html>")
