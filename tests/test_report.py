"""Leaderboard statistics on a hand-made trial table whose answers are known."""

from __future__ import annotations

import math
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
    from etlbench.runner.store import ResultsStore

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
    md = (tmp_path / "leaderboard.md").read_text()
    assert "failed" in md and "infeasible" in md and "frozen linear probe" in md and "7.8" in md
    assert "VISAPP 2022" in md and "not measured here" in md
    assert "| age | 8x | b | 0.750 ± 0.025 | a | 0.700 |" in md  # the headline, with the runner-up
    assert "| age | a |  | 50.0% | 40.0% | 30.0% |  | 0.950 |" in md  # a's budget-free point (no achieved x given)
    page = (tmp_path / "leaderboard.html").read_text()
    assert "data:image/png;base64," in page and "<script>" in page and "src=\"http" not in page
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert {"retention", "retention_ci95", "auc_retention", "rank", "pareto_params"} <= set(board.columns)
    assert main(["report", str(tmp_path), "--figures-only", "--format", "pdf"]) == 0
    assert (tmp_path / "figures" / "age-metric-vs-latency.pdf").is_file()


def test_report_of_an_empty_database_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from etlbench.cli import main
    from etlbench.runner.store import ResultsStore

    with ResultsStore(tmp_path / "results.sqlite"):
        pass
    assert main(["report", str(tmp_path)]) == 2
    assert "results.sqlite: no trials stored yet, nothing to report" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no results database" in capsys.readouterr().err
