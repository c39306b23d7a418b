"""Reports of a results database: the tidy trial table, the leaderboard (Markdown, CSV, HTML) and figures.

A report never averages rows that do not belong together: each (experiment, backbone) is its own section,
of one code version (the newest unless ``code_version`` says otherwise), and the page says which rows it left
out and why (:mod:`etlbench.report.scope`). Python API::

    from etlbench.report import load_results, write_report
    df = load_results("runs/quick")        # one row per trial, the columns of docs/design.md first
    write_report("runs/quick")             # leaderboard.md/.csv/.html and figures/ in that folder
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pandas as pd

from etlbench.errors import ReportError
from etlbench.report.cross import cross_summary, with_in_domain_groups
from etlbench.report.scope import select
from etlbench.results import ResultsStore

__all__ = ["ReportError", "load_results", "write_report"]

FORMATS = ("png", "svg", "pdf")
_BUDGET = ("samples", "epochs", "max_steps", "batch_size", "lr", "trunk_lr_scale", "warmup", "norm", "distill",
           "precision", "objective")


def load_results(out_dir: str | Path, curves: bool = False) -> pd.DataFrame:
    """Every trial of ``out_dir``/results.sqlite as one tidy DataFrame (see :meth:`ResultsStore.frame`; with
    ``curves``, the column ``recovery_curve`` holds each trial's anytime evaluations)."""
    path = Path(out_dir) / "results.sqlite"
    if not path.is_file():
        raise ReportError(f"{path}: no results database (run `etlbench run --out {out_dir}` first)")
    with ResultsStore(path, readonly=True) as store:
        return store.frame(curves)


def _conditions(runs: list[dict[str, Any]], key: tuple[str, str], part: pd.DataFrame) -> tuple[str, str]:
    """The title and the conditions line of one section, from the runs that wrote its rows: the last that
    measured something (its machine is the one the latencies were measured on), else the last. The seeds are the
    rows' own: runs of one seed each (a long grid run a seed at a time) write one section."""
    experiment, backbone = key
    code, writers = part["code_version"].iloc[0], set(part["run_id"].dropna().astype(int))
    own = [r for r in runs if r["run_id"] in writers]
    measured = [r for r in own if (r["summary"] or {}).get("measured")]
    title = f"{experiment}: {backbone}"
    if not own:
        return title, f"Code {code}."
    last = (measured or own)[-1]
    spec, env = last["spec"], last["environment"]
    summary = last["summary"] or {}
    alone = (f"measured beside other work ({summary['busy_cores_before_measure']:.2f} cores busy): indicative only"
             if summary.get("measured_busy") else "measured alone")
    recovery = spec.get("recovery", {})
    budget = ", ".join(f"{k} {recovery[k]}" for k in _BUDGET if recovery.get(k) is not None)
    measure, gpu = spec.get("measure", {}), bool(spec.get("gpus"))
    seeds = sorted(part["seed"].dropna().astype(int).unique().tolist())
    return (title,
            f"Code {code}. Backbone {backbone}, seeds {seeds}, train subset {spec.get('max_train') or 'all'}, "
            f"recovery ({budget}); rows of {len(own)} run(s), measured in the last "
            f"on {env.get('cpu')} ({env.get('usable_cores')} usable cores), {torch_build(env.get('torch'), gpu)}, "
            f"{env.get('workers')} worker(s) x {env.get('threads_per_trial')} thread(s); latency with "
            f"{measure.get('threads')} thread(s) at batches {measure.get('batches')}, {alone}{_drift(part)}.")


def _drift(part: pd.DataFrame) -> str:
    """How the reductions' baseline was timed, and how far it moved around the models at batch 1
    (:func:`etlbench.measure.flanked`); nothing where no row was measured."""
    if "latency_reduction" not in part or part["latency_reduction"].isna().all():
        return ""
    drift = part["baseline_latency_drift"].dropna() if "baseline_latency_drift" in part else pd.Series(dtype=float)
    if drift.empty:
        return "; reductions against one timing of the baseline per run"
    return (f"; each model timed between two timings of its baseline, whose batch-1 median moved by a median "
            f"{drift.median():.1%} (at most {drift.max():.1%}) around a model")


_BUILDS = {"cu": "a CUDA build", "rocm": "a ROCm build", "cpu": "a CPU build"}


def torch_build(version: str | None, gpu: bool = False) -> str:
    """``torch VERSION`` and what its local tag says it was built for, and where it ran: "+cu130" without a GPU
    is "a CUDA build, run on CPU", "+cpu" "a CPU build"; a version without a tag says no more than its number."""
    if not version:
        return "torch version not recorded"
    tag = version.partition("+")[2]
    build = next((text for prefix, text in _BUILDS.items() if tag.startswith(prefix)), "")
    if not build or build == _BUILDS["cpu"]:
        return f"torch {version}" + (f" ({build})" if build else "")
    where = "training on GPU, measured on CPU" if gpu else "run on CPU"
    return f"torch {version} ({build}, {where})"


def _slug(key: tuple[str, str]) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(key))


def write_report(out_dir: str | Path, *, figures: bool = True, tables: bool = True,
                 formats: tuple[str, ...] = ("png", "svg"), code_version: str | None = None,
                 backbone: str | None = None, experiment: str | None = None) -> dict[str, Any]:
    """Write leaderboard.md, leaderboard.csv, leaderboard.html and figures/ into ``out_dir`` (one section per
    experiment and backbone; with several, their figures go to figures/EXPERIMENT-BACKBONE/); returns what was
    written, the rows left out and how long it took."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    trials = load_results(out_dir, curves=True)
    if trials.empty:
        raise ReportError(f"{out_dir / 'results.sqlite'}: no trials stored yet, nothing to report")
    from etlbench.report.figures import write_figures  # matplotlib and seaborn: once there is something to draw
    from etlbench.report.page import build, html_page, to_html, to_markdown

    selection = select(trials, code_version=code_version, backbone=backbone, experiment=experiment)
    with ResultsStore(out_dir / "results.sqlite", readonly=True) as store:
        runs, evaluations = store.runs(), store.evaluations()
    written: list[Path] = []
    markdown, html, csv = [], [], []
    for key, part in selection.sections:
        fig_dir = out_dir / "figures" / (_slug(key) if len(selection.sections) > 1 else "")
        title, conditions = _conditions(runs, key, part)
        figure_files: list[Path] = []  # only what this call drew: never an older report's figures
        part = with_in_domain_groups(part, evaluations)
        cross = cross_summary(part, evaluations)
        if figures and (part["status"] == "ok").any():
            figure_files = write_figures(part, fig_dir, formats=tuple(set(formats) | {"png"}), cross=cross)
            written += figure_files
        report = build(part, cross)
        markdown.append(to_markdown(report, title, conditions, [str(f.relative_to(out_dir)) for f in figure_files
                                                                 if f.suffix == ".png"]))
        html.append(to_html(report, title, conditions, figure_files))
        csv.append(report["summary"].merge(report["scores"], on=["task", "method"], how="left")
                   .assign(experiment=key[0], backbone=key[1], code_version=part["code_version"].iloc[0]))
    if tables:
        notes = ["## Rows left out", "", *[f"- {n}" for n in selection.left_out], ""] if selection.left_out else []
        (out_dir / "leaderboard.md").write_text("\n".join(notes + markdown))
        pd.concat(csv).to_csv(out_dir / "leaderboard.csv", index=False)
        (out_dir / "leaderboard.html").write_text(html_page(html, selection.left_out))
        written += [out_dir / f"leaderboard.{s}" for s in ("md", "csv", "html")]
    return {"written": [str(p) for p in written], "left_out": selection.left_out,
            "sections": [list(k) for k, _ in selection.sections], "seconds": time.perf_counter() - start}
