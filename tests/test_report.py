"""Leaderboard statistics on a hand-made trial table whose answers are known, and reports that never average
rows of different backbones or code."""

from __future__ import annotations

import math
import re
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etlbench.report.leaderboard import (
    ci95,
    headline,
    method_scores,
    overall_ranks,
    pareto_front,
    summarize,
    with_pareto,
)
from etlbench.results import ResultsStore


def _trial(task: str, method: str, compression: float | None, seed: int, retention: float, status: str = "ok",
           params: float = 100.0) -> dict:
    return {"trial_id": f"{task}-{method}-{compression}-{seed}", "task": task, "method": method,
            "compression": compression, "seed": seed, "status": status,
            "retention": retention if status == "ok" else None, "metric": retention,
            "params": params, "macs": params * 10, "latency_ms": params / 10}


@pytest.fixture
def trials() -> pd.DataFrame:
    rows = []
    for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
        rows += [_trial("age", "a", 2, seed, 0.9 + jitter, params=50),
                 _trial("age", "a", 8, seed, 0.7 + jitter, params=12),
                 _trial("age", "b", 2, seed, 0.8 + jitter, params=50),
                 _trial("age", "b", 8, seed, 0.75 + jitter, params=12),
                 _trial("age", "c", 2, seed, 0.5 + jitter, params=50)]
    rows += [_trial("age", "c", 8, 0, 0.0, status="failed"), _trial("age", "a", None, 0, 0.95, params=30),
             _trial("age", "b", 64, 0, 0.0, status="infeasible")]
    return pd.DataFrame(rows)


def test_summary_counts_means_and_intervals(trials: pd.DataFrame) -> None:
    s = summarize(trials).set_index(["method", "target"])
    assert s.loc[("a", "2x"), "n_ok"] == 3 and s.loc[("a", "2x"), "retention"] == pytest.approx(0.9)
    # three values 0.89, 0.90, 0.91: sd 0.01, t(0.975, 2) = 4.303
    assert s.loc[("a", "2x"), "retention_ci95"] == pytest.approx(4.3027 * 0.01 / math.sqrt(3), rel=1e-3)
    assert math.isnan(s.loc[("a", "auto"), "retention_ci95"])  # one seed: no interval
    assert (s.loc[("c", "8x"), "n_failed"], s.loc[("c", "8x"), "n_ok"]) == (1, 0)  # shown, not dropped
    assert s.loc[("b", "64x"), "n_infeasible"] == 1
    assert math.isnan(ci95(pd.Series([1.0])))
    assert s["scoring_seconds"].isna().all()  # rows that do not say how long scoring took


def test_scoring_time_counts_the_shared_stage_a_trial_read(trials: pd.DataFrame) -> None:
    """ETL's probes run once per task and seed but are part of every ETL trial's cost of choosing filters."""
    timed = trials.assign(prune_seconds=2.0, probe_seconds=np.where(trials["method"] == "a", 30.0, np.nan))
    s = summarize(timed).set_index(["method", "target"])
    assert (s.loc[("a", "2x"), "scoring_seconds"], s.loc[("b", "2x"), "scoring_seconds"]) == (32.0, 2.0)


def test_area_under_retention_and_ranks(trials: pd.DataFrame) -> None:
    # the grid is 2x and 8x: at 64x (b's infeasible row) nobody has a result
    scores = method_scores(summarize(trials)).set_index("method")
    assert (scores["grid_points"] == 2).all()
    assert scores.loc["a", "auc_retention"] == pytest.approx(0.8)  # mean of 0.9 and 0.7 on a straight segment
    assert scores.loc["b", "auc_retention"] == pytest.approx(0.775)
    assert math.isnan(scores.loc["c", "auc_retention"])  # c failed at 8x: no area, no rank
    assert (scores.loc["a", "rank"], scores.loc["b", "rank"]) == (1, 2)
    assert list(overall_ranks(scores.reset_index())["method"]) == ["a", "b"]
    one_point = method_scores(summarize(trials[trials["compression"] == 2])).set_index("method")
    assert one_point.loc["c", "auc_retention"] == pytest.approx(0.5)  # a one-point grid: the retention there


def test_headline_is_the_best_at_the_largest_targets(trials: pd.DataFrame) -> None:
    top = headline(summarize(trials)).set_index("target")
    assert list(top.index) == ["2x", "8x"]  # 64x has no result (b's is infeasible): not a headline point
    assert (top.loc["2x", "method"], top.loc["2x", "runner_up"]) == ("a", "b")
    assert top.loc["8x", "retention"] == pytest.approx(0.75) and top.loc["8x", "runner_up"] == "a"
    assert top.loc["8x", "methods_compared"] == 2  # c failed at 8x
    assert list(headline(summarize(trials), largest=1)["target"]) == ["8x"]


def test_pareto_front() -> None:
    quality = np.array([0.9, 0.8, 0.85, 0.7, np.nan])
    cost = np.array([10.0, 5.0, 10.0, 5.0, 1.0])
    assert pareto_front(quality, cost).tolist() == [True, True, False, False, False]


def test_pareto_columns_per_task(trials: pd.DataFrame) -> None:
    s = with_pareto(summarize(trials)).set_index(["method", "target"])
    assert s.loc[("a", "auto"), "pareto_params"]  # 0.95 at 30 params beats every 50-param point
    assert not s.loc[("a", "2x"), "pareto_params"]
    assert s.loc[("b", "8x"), "pareto_latency"]  # 0.75 at the lowest cost beats a's 0.7 there
    assert not s.loc[("c", "8x"), "pareto_params"]  # failed: never on the front


def test_write_report_from_a_results_database(trials: pd.DataFrame, tmp_path) -> None:
    from etlbench.cli import main
    from etlbench.report import load_results, write_report

    full = trials.assign(metric_name="mae_years", higher_is_better=False, baseline_metric=6.0,
                         linear_probe_metric=7.8, compression_achieved=trials["compression"],
                         params_reduction=0.5, macs_reduction=0.4, latency_reduction=0.3)
    with ResultsStore(tmp_path / "results.sqlite") as store:
        run = store.start_run({"name": "hand-made", "backbone": "dlib-resnet29", "seeds": [0, 1, 2],
                               "measure": {"threads": 2, "batches": [1, 32]}}, {"cpu": "test cpu", "workers": 2})
        for row in full.to_dict("records"):
            store.put({k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}, {}, run)
    assert len(load_results(tmp_path)) == len(trials)
    result = write_report(tmp_path, formats=("png", "svg"))
    names = {Path(f).name for f in result["written"]}
    assert {"leaderboard.md", "leaderboard.csv", "leaderboard.html", "age-metric-vs-params.svg",
            "tradeoffs-all-tasks.png"} <= names
    assert not any("-auc-vs-" in name for name in names)  # AUC figures are for rows that keep an AUC
    md = (tmp_path / "leaderboard.md").read_text()
    assert "failed" in md and "infeasible" in md and "frozen linear probe" in md and "7.8" in md
    assert "VISAPP 2022" in md and "not measured here" in md
    assert "| age | 8x | b | 0.750 ± 0.025 | a | 0.700 |" in md  # the headline, with the runner-up
    assert "| age | a |  | 50.0% | 40.0% | 30.0% |  | 0.950 |" in md  # a's budget-free point (no achieved x given)
    page = (tmp_path / "leaderboard.html").read_text()
    assert "data:image/png;base64," in page and "<script>" in page and "src=\"http" not in page
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert {"retention", "retention_ci95", "auc_retention", "rank", "pareto_params"} <= set(board.columns)
    svg = (tmp_path / "figures" / "age-metric-vs-params.svg").read_bytes()
    assert main(["report", str(tmp_path), "--figures-only", "--format", "pdf", "svg"]) == 0
    assert (tmp_path / "figures" / "age-metric-vs-latency.pdf").is_file()
    assert (tmp_path / "figures" / "age-metric-vs-params.svg").read_bytes() == svg  # same data, same file


def test_report_of_an_empty_database_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from etlbench.cli import main

    with ResultsStore(tmp_path / "results.sqlite"):
        pass
    assert main(["report", str(tmp_path)]) == 2
    assert "results.sqlite: no trials stored yet, nothing to report" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no results database" in capsys.readouterr().err


def _scoped(backbone: str, code: str, seed: int, retention: float, method: str = "a") -> dict:
    """A complete ok row of experiment 'exp' on ``backbone`` under code ``code``."""
    return {**_trial("age", method, 4.0, seed, retention), "trial_id": f"{backbone}-{code}-{method}-{seed}",
            "backbone": backbone, "code_version": code, "metric_name": "mae_years", "higher_is_better": False,
            "baseline_metric": 6.0, "compression_achieved": 4.0, "params_reduction": 0.75, "macs_reduction": 0.7,
            "latency_reduction": 0.5, "dataset": "utkface"}


@pytest.fixture
def two_backbones_two_codes(tmp_path: Path) -> Path:
    """Rows of two backbones, each under an older code (written first) and a newer one (written last)."""
    retentions = {("dlib-resnet29", "old1"): (0.10, 0.20), ("mobilefacenet", "old1"): (0.30, 0.40),
                  ("dlib-resnet29", "new2"): (0.90, 0.80), ("mobilefacenet", "new2"): (0.60, 0.70)}
    with ResultsStore(tmp_path / "results.sqlite") as store:
        run = store.start_run({"name": "exp"}, {"cpu": "test cpu"})
        for (backbone, code), values in retentions.items():  # old code first: its rows are the older ones
            for seed, retention in enumerate(values):
                for method, shift in (("a", 0.0), ("b", -0.05)):
                    row = _scoped(backbone, code, seed, retention + shift, method)
                    store.put(row, {"trial": row["trial_id"]}, run, experiment="exp")
            time.sleep(0.01)
    return tmp_path


def test_a_report_never_averages_backbones_or_code_versions(two_backbones_two_codes: Path) -> None:
    from etlbench.report import write_report

    out = two_backbones_two_codes
    result = write_report(out, figures=False)
    assert result["sections"] == [["exp", "dlib-resnet29"], ["exp", "mobilefacenet"]]
    board = pd.read_csv(out / "leaderboard.csv").set_index(["backbone", "method"])
    # each section's retention is the mean of its own backbone's newest-code rows only
    assert board.loc[("dlib-resnet29", "a"), "retention"] == pytest.approx((0.90 + 0.80) / 2)
    assert board.loc[("mobilefacenet", "a"), "retention"] == pytest.approx((0.60 + 0.70) / 2)
    assert board.loc[("dlib-resnet29", "b"), "retention"] == pytest.approx((0.85 + 0.75) / 2)
    assert set(board["code_version"]) == {"new2"} and set(board["experiment"]) == {"exp"}
    assert len(board) == 4
    # the older code's rows are said to be left out, on the page too
    assert len(result["left_out"]) == 2
    for backbone, note in zip(("dlib-resnet29", "mobilefacenet"), result["left_out"], strict=True):
        assert f"exp on {backbone}: 4 row(s) of other code (old1: 4) left out" in note and "new2" in note
    md = (out / "leaderboard.md").read_text()
    assert md.index("## Rows left out") < md.index("# exp: dlib-resnet29") < md.index("# exp: mobilefacenet")
    assert all(f"- {note}" in md for note in result["left_out"])
    assert "Rows left out" in (out / "leaderboard.html").read_text()

    older = write_report(out, figures=False, code_version="old1")  # the older rows, asked for by name
    assert older["sections"] == result["sections"]
    board = pd.read_csv(out / "leaderboard.csv").set_index(["backbone", "method"])
    assert board.loc[("dlib-resnet29", "a"), "retention"] == pytest.approx((0.10 + 0.20) / 2)
    assert board.loc[("mobilefacenet", "a"), "retention"] == pytest.approx((0.30 + 0.40) / 2)
    assert set(board["code_version"]) == {"old1"}
    assert older["left_out"] == ["8 row(s) of another code_version than old1 (new2: 8): not selected"]

    one = write_report(out, figures=False, backbone="mobilefacenet")
    assert one["sections"] == [["exp", "mobilefacenet"]]
    assert set(pd.read_csv(out / "leaderboard.csv")["backbone"]) == {"mobilefacenet"}
    assert any("another backbone than mobilefacenet (dlib-resnet29: 8)" in n for n in one["left_out"])


def test_one_row_per_point_where_an_edited_spec_left_older_trials(tmp_path: Path) -> None:
    """Two trials of one experiment and code at the same point (an edited preset of the same name) are not seeds."""
    from etlbench.report import write_report

    with ResultsStore(tmp_path / "results.sqlite") as store:
        run = store.start_run({"name": "exp"}, {"cpu": "test cpu"})
        for seed, retention, trial_id in ((0, 0.2, "old-spec-0"), (1, 0.4, "old-spec-1"), (0, 0.8, "new-spec-0")):
            row = {**_scoped("dlib-resnet29", "c1", seed, retention), "trial_id": trial_id}
            store.put(row, {"trial": trial_id}, run, experiment="exp")
            time.sleep(0.01)
    result = write_report(tmp_path, figures=False)
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert board.loc[0, "retention"] == pytest.approx((0.8 + 0.4) / 2)  # seed 0 counted once: its newest row
    assert any("1 row(s) of another spec at a point that a newer row holds" in n for n in result["left_out"])


def test_several_sections_put_their_figures_apart(two_backbones_two_codes: Path) -> None:
    from etlbench.report import write_report

    out = two_backbones_two_codes
    result = write_report(out, formats=("png",))
    for backbone in ("dlib-resnet29", "mobilefacenet"):
        assert (out / "figures" / f"exp-{backbone}" / "age-metric-vs-params.png").is_file()
    assert not list((out / "figures").glob("*.png"))  # nothing of one section lies beside the other's
    assert all("/figures/exp-" in f for f in result["written"] if f.endswith(".png"))


def test_a_report_cli_and_its_choices(two_backbones_two_codes: Path, capsys: pytest.CaptureFixture) -> None:
    from etlbench.cli import main

    out = two_backbones_two_codes
    assert main(["report", str(out), "--code-version", "old1", "--experiment", "exp", "--json"]) == 0
    assert '"exp",\n      "mobilefacenet"' in capsys.readouterr().out
    assert main(["report", str(out), "--code-version", "nope"]) == 2
    assert "no rows with code_version 'nope'; the database has: new2, old1" in capsys.readouterr().err
    assert main(["report", str(out), "--backbone", "vggface16"]) == 2
    assert "no rows with backbone 'vggface16'" in capsys.readouterr().err


def test_load_results_without_a_database_is_a_report_error(tmp_path: Path) -> None:
    from etlbench.errors import EtlbenchError
    from etlbench.report import ReportError, load_results

    with pytest.raises(ReportError, match=r"results\.sqlite: no results database") as err:
        load_results(tmp_path)
    assert isinstance(err.value, EtlbenchError)
    assert not (tmp_path / "results.sqlite").exists()  # looking did not create one


def test_recovery_curves_become_retention_against_cost(tmp_path: Path) -> None:
    """Each anytime evaluation of a trial is a point: samples and seconds spent, and the retention of the model
    val had selected (an error metric: baseline / metric); the figure marks the baseline's training cost."""
    from etlbench.report.figures import curve_points, write_figures

    def row(method: str, compression: float, seed: int, metrics: list[float]) -> dict:
        curve = [{"samples": 100 * (i + 1), "seconds": 2.0 * (i + 1), "best_test_mae_deg": m}
                 for i, m in enumerate(metrics)]
        return {**_trial("head_pose", method, compression, seed, 0.5), "metric_name": "mae_deg",
                "higher_is_better": False, "baseline_metric": 4.0, "linear_probe_metric": 10.0,
                "baseline_samples_seen": 1000, "baseline_train_seconds": 50.0, "recovery_curve": curve}

    trials = pd.DataFrame([row(m, c, s, [8.0, 5.0 + s, 4.0]) for m in ("a", "b") for c in (4.0, 16.0)
                           for s in (0, 1)])
    points = curve_points(trials)
    assert len(points) == 2 * 2 * 2 * 3
    first = points[(points["method"] == "a") & (points["target"] == "4x") & (points["seed"] == 1)]
    assert list(first["retention"]) == pytest.approx([0.5, 4 / 6, 1.0])
    assert list(first["samples"]) == [100, 200, 300] and (first["probe_retention"] == 0.4).all()
    written = write_figures(trials, tmp_path, formats=("png",))
    assert tmp_path / "head_pose-retention-vs-recovery-cost.png" in written


def test_the_conditions_name_the_torch_build() -> None:
    """A CUDA build run on CPU says so; a CPU build is a CPU build; an untagged version says no more."""
    from etlbench.report import torch_build

    assert torch_build("2.14.1+cu130") == "torch 2.14.1+cu130 (a CUDA build, run on CPU)"
    assert torch_build("2.14.1+cu130", gpu=True) == (
        "torch 2.14.1+cu130 (a CUDA build, training on GPU, measured on CPU)")
    assert torch_build("2.14.1+cpu") == "torch 2.14.1+cpu (a CPU build)"
    assert torch_build("2.14.1") == "torch 2.14.1" and torch_build(None) == "torch version not recorded"


def test_the_conditions_name_the_rows_seeds_not_the_last_runs(tmp_path: Path) -> None:
    """A grid run a seed at a time (one run per seed, each spec with `seeds: [S]`) reports the seeds of its rows,
    not those of the run that wrote last."""
    from etlbench.report import write_report

    with ResultsStore(tmp_path / "results.sqlite") as store:
        for seed in (0, 1):
            run = store.start_run({"name": "exp", "seeds": [seed]}, {"cpu": "test cpu"})
            store.put(_scoped("dlib-resnet29", "c1", seed, 0.9), {}, run)
            store.finish_run(run, {})
    write_report(tmp_path, formats=("png",))
    assert "seeds [0, 1]," in (tmp_path / "leaderboard.md").read_text()


def test_the_conditions_say_how_the_reductions_baseline_was_timed() -> None:
    """Rows timed between two timings of their baseline give the median and largest move at batch 1; older rows
    say that the baseline was timed once per run; rows not measured say nothing."""
    from etlbench.report import _drift

    measured = pd.DataFrame({"latency_reduction": [0.5, 0.4, 0.3, None],
                             "baseline_latency_drift": [0.01, 0.03, 0.2, None]})
    assert _drift(measured) == ("; each model timed between two timings of its baseline, whose batch-1 median moved "
                                "by a median 3.0% (at most 20.0%) around a model")
    assert _drift(measured.drop(columns="baseline_latency_drift")) == (
        "; reductions against one timing of the baseline per run")
    assert _drift(pd.DataFrame({"metric": [1.0]})) == ""
    assert _drift(measured.assign(latency_reduction=None)) == ""


def test_legends_sit_outside_the_axes(tmp_path: Path) -> None:
    """A legend never covers data: it lies outside every axes, and the saved file still holds it."""
    import matplotlib.pyplot as plt

    from etlbench.report.figures import legend_outside

    for above in (False, True):
        fig, ax = plt.subplots(figsize=(3.3, 2.6))
        for k in range(5):
            ax.plot([0, 1], [k, k + 1], label=f"method {k}")
        legend_outside(fig, [ax, ax], ncol=2, above=above)  # each label once
        fig.savefig(tmp_path / "f.png", bbox_inches="tight")
        renderer = fig.canvas.get_renderer()
        (legend,) = fig.legends
        box, axes_box = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert len(legend.get_texts()) == 5 and not box.overlaps(axes_box)
        saved = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)  # what bbox_inches="tight" keeps
        assert saved.contains(box.x0 + 1, box.y0 + 1) and saved.contains(box.x1 - 1, box.y1 - 1)
        plt.close(fig)


def test_report_reads_the_database_without_changing_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A database without etlbench's tables is named as such, and left exactly as it was (opened read-only)."""
    from etlbench.cli import main

    db = tmp_path / "results.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE other (x)")
    before = db.read_bytes()
    assert main(["report", str(tmp_path)]) == 2
    assert "not an etlbench results database: it has no table runs or trials" in capsys.readouterr().err
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def test_each_method_keeps_its_style_whatever_else_is_drawn() -> None:
    from etlbench.plugins import METHODS
    from etlbench.report.figures import method_styles

    few = method_styles(["etl", "taylor", "someone-elses-plugin"])
    many = method_styles([*METHODS, "someone-elses-plugin", "another-plugin"])
    assert all(few[m] == many[m] for m in few)
    builtins = {many[m] for m in METHODS}
    assert len(builtins) == len(METHODS) >= 8  # no two built-ins share a colour and a marker
    plugins = method_styles([f"plugin{i}" for i in range(300)])
    assert not builtins & set(plugins.values())  # nor does a plugin share one with a built-in


def test_a_crowded_figure_shows_etl_the_controls_and_the_best_three_in_colour() -> None:
    from etlbench.report.figures import highlighted

    retention = {"etl": 0.5, "random": 0.4, "uniform": 0.45, "scratch": 0.3, "a": 0.9, "b": 0.2, "c": 0.8,
                 "d": 0.7, "e": 0.1, "f": 0.6}
    summary = pd.DataFrame([{"method": m, "retention": r + d} for m, r in retention.items() for d in (0.0, 0.02)])
    assert highlighted(summary) == {"etl", "random", "uniform", "scratch", "a", "c", "d"}
    few = summary[summary["method"].isin(["a", "b", "etl"])]
    assert highlighted(few) == {"a", "b", "etl"}


def test_pooling_two_groups_gives_the_mean_and_std_of_their_union() -> None:
    from etlbench.report.protocol import pooled

    a, b = [0.91, 0.95, 0.93, 0.97, 0.90], [0.88, 0.99, 0.94, 0.92, 0.96]
    mean, std = pooled([np.mean(a), np.mean(b)], [np.std(a, ddof=1), np.std(b, ddof=1)], [5, 5])
    assert (mean, std) == (pytest.approx(np.mean(a + b)), pytest.approx(np.std(a + b, ddof=1)))


def test_the_two_verification_halves_give_lfws_ten_fold_figure(tmp_path: Path) -> None:
    """Per seed, the folds of both halves pooled exactly, the unpruned baseline's from the test metrics rows keep
    of it; a point run on one half only is left out; the section is on the written page."""
    from etlbench.report import load_results, write_report
    from etlbench.report.protocol import ten_fold_table

    def metrics(acc: list[float], auc: float) -> dict[str, float]:
        return {"accuracy": float(np.mean(acc)), "accuracy_std": float(np.std(acc, ddof=1)), "auc": auc}

    rng = np.random.default_rng(0)
    folds, rows = {}, []
    for seed in (0, 1, 2):
        for task in ("verification", "verification_reverse"):
            acc, base = list(rng.uniform(0.85, 0.95, 5)), list(rng.uniform(0.9, 0.99, 5))
            folds[seed, task], folds[seed, task, "base"] = acc, base
            rows.append({"trial_id": f"{task}-taylor-{seed}", "task": task, "method": "taylor", "compression": 4.0,
                         "seed": seed, "status": "ok", "metric": float(np.mean(acc)), "retention": 1.0,
                         "baseline_metric": float(np.mean(base)), "metric_name": "accuracy", "higher_is_better": True,
                         "params": 25.0, "macs": 250.0, "latency_ms": 2.5,
                         "metrics": metrics(acc, 0.9 + 0.01 * seed + (task == "verification") * 0.02),
                         "baseline_metrics": metrics(base, 0.96 + (task == "verification") * 0.02)})
    rows.append({**rows[0], "trial_id": "one-half", "method": "magnitude"})
    with ResultsStore(tmp_path / "results.sqlite") as store:
        run = store.start_run({"name": "verification", "backbone": "dlib-resnet29"}, {"cpu": "test cpu"})
        for row in rows:
            store.put(row, {}, run)

    trials = load_results(tmp_path, curves=True)
    table = ten_fold_table(trials).set_index("method")
    assert list(table.index) == ["unpruned (transfer baseline)", "taylor"]  # magnitude ran on one half only
    for method, key in (("taylor", ()), ("unpruned (transfer baseline)", ("base",))):
        per_seed = [folds[(s, "verification", *key)] + folds[(s, "verification_reverse", *key)] for s in (0, 1, 2)]
        means = [np.mean(f) for f in per_seed]
        assert table.loc[method, "accuracy (10 folds)"] == f"{np.mean(means):.4f} ± {ci95(pd.Series(means)):.3f}"
        assert table.loc[method, "fold std"] == f"{np.mean([np.std(f, ddof=1) for f in per_seed]):.4f}"
        assert table.loc[method, "seeds"] == 3
    assert (table.loc["taylor", "AUC"], table.loc["unpruned (transfer baseline)", "AUC"]) == ("0.9200", "0.9700")
    ratios = [np.mean(folds[s, "verification"] + folds[s, "verification_reverse"])
              / np.mean(folds[s, "verification", "base"] + folds[s, "verification_reverse", "base"]) for s in (0, 1, 2)]
    assert table.loc["taylor", "retention"] == f"{np.mean(ratios):.3f}"
    older = ten_fold_table(trials.drop(columns="baseline_metrics")).set_index("method")  # rows before they kept it
    assert tuple(older.loc["unpruned (transfer baseline)", ["fold std", "AUC"]]) == ("not stored", "not stored")
    mixed = trials.assign(baseline_metrics=trials["baseline_metrics"].where(trials["seed"] != 0, None))
    assert ten_fold_table(mixed).set_index("method").loc["unpruned (transfer baseline)", "AUC"] == "not stored"
    from etlbench.report.figures import as_metric

    auc = as_metric(trials, "auc").set_index("trial_id")  # the AUC's own figures: its values, against its baseline's
    assert auc.loc["verification-taylor-1", ["metric", "baseline_metric"]].tolist() == pytest.approx([0.93, 0.98])
    assert auc.loc["verification-taylor-1", "retention"] == pytest.approx(0.93 / 0.98)
    assert auc["linear_probe_metric"].isna().all() and (auc["metric_name"] == "auc").all()
    assert as_metric(trials.drop(columns="metrics"), "auc").empty  # rows without their metrics: no AUC figures
    assert set(as_metric(mixed, "auc")["seed"]) == {1, 2}  # nor a row whose baseline's AUC was not kept
    write_report(tmp_path, formats=("png",))
    figures = {f.name for f in (tmp_path / "figures").iterdir()}
    assert {f"{t}-{m}-vs-{c}.png" for t in ("verification", "verification_reverse") for m in ("metric", "auc")
            for c in ("params", "macs", "latency")} <= figures
    page = (tmp_path / "leaderboard.md").read_text()
    assert "LFW's ten folds" in page
    for task in ("verification", "verification_reverse"):  # each task's section shows its own two figures
        section = page.split(f"\n## {task} — ")[1].split("\n## ")[0]
        assert sorted(re.findall(r"\]\((\S+\.png)\)", section)) == [
            f"figures/{task}-auc-vs-params.png", f"figures/{task}-metric-vs-params.png"]
