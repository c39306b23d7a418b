"""Reports of a results database: the tidy trial table, the leaderboard (Markdown, CSV, HTML) and figures.

Python API::

    from etlbench.report import load_results, write_report
    df = load_results("runs/quick")        # one row per trial, the columns of design.md first
    write_report("runs/quick")             # leaderboard.md/.csv/.html and figures/ in that folder
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from etlbench.runner.store import ResultsStore

FORMATS = ("png", "svg", "pdf")
_BUDGET = ("epochs", "max_steps", "batch_size", "lr")


class ReportError(ValueError):
    """A results folder that cannot be reported on; the message names it and says why."""


def load_results(out_dir: str | Path) -> pd.DataFrame:
    """Every trial of ``out_dir``/results.sqlite as one tidy DataFrame (see :meth:`ResultsStore.frame`)."""
    path = Path(out_dir) / "results.sqlite"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results database (run `etlbench run --out {out_dir}` first)")
    with ResultsStore(path) as store:
        return store.frame()


def _conditions(out_dir: Path) -> tuple[str, str]:
    with ResultsStore(out_dir / "results.sqlite") as store:
        runs = store.runs()
    if not runs:
        return str(out_dir), ""
    spec, env = runs[-1]["spec"], runs[-1]["environment"]
    budget = ", ".join(f"{k} {spec.get('recovery', {}).get(k)}" for k in _BUDGET)
    measure = spec.get("measure", {})
    return (f"{spec.get('name', out_dir.name)}: {spec.get('backbone')}",
            f"Backbone {spec.get('backbone')}, seeds {spec.get('seeds')}, train subset "
            f"{spec.get('max_train') or 'all'}, recovery ({budget}); "
            f"{len(runs)} run(s), the last on {env.get('cpu')} ({env.get('usable_cores')} usable cores), torch "
            f"{env.get('torch')}, {env.get('workers')} worker(s) x {env.get('threads_per_trial')} thread(s); latency "
            f"with {measure.get('threads')} thread(s) at batches {measure.get('batches')}, measured alone.")


def write_report(out_dir: str | Path, *, figures: bool = True, tables: bool = True,
                 formats: tuple[str, ...] = ("png", "svg")) -> dict[str, Any]:
    """Write leaderboard.md, leaderboard.csv, leaderboard.html and figures/ into ``out_dir``; returns what was
    written and how long it took."""
    from etlbench.report.figures import write_figures
    from etlbench.report.page import build, to_html, to_markdown

    start = time.perf_counter()
    out_dir = Path(out_dir)
    trials = load_results(out_dir)
    if trials.empty:
        raise ReportError(f"{out_dir / 'results.sqlite'}: no trials stored yet, nothing to report")
    title, conditions = _conditions(out_dir)
    written: list[Path] = []
    figure_files = write_figures(trials, out_dir / "figures", formats=tuple(set(formats) | {"png"})) \
        if figures and (trials["status"] == "ok").any() else sorted((out_dir / "figures").glob("*.png"))
    written += figure_files if figures else []
    if tables:
        report = build(trials)
        rel = [str(f.relative_to(out_dir)) for f in figure_files if f.suffix == ".png"]
        (out_dir / "leaderboard.md").write_text(to_markdown(report, title, conditions, rel))
        report["summary"].merge(report["scores"], on=["task", "method"], how="left").to_csv(
            out_dir / "leaderboard.csv", index=False)
        (out_dir / "leaderboard.html").write_text(to_html(report, title, conditions, figure_files))
        written += [out_dir / f"leaderboard.{s}" for s in ("md", "csv", "html")]
    return {"written": [str(p) for p in written], "seconds": time.perf_counter() - start}
