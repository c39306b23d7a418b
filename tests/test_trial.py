"""Trials end to end on synthetic faces: the results row of design.md, ETL's cut and probe cache, failures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import etlbench.trial as trial_module
from etlbench.cli import main
from etlbench.train import TrainConfig, TrainingError
from etlbench.trial import RECOVERY, TrialSpec, run_trial

DESIGN_COLUMNS = ("trial_id task dataset backbone method compression seed status error metric_name higher_is_better "
                  "metric baseline_metric retention params params_reduction size_bytes macs macs_reduction "
                  "latency_ms latency_iqr_ms latency_reduction train_seconds samples_seen").split()
SMALL = dict(dataset="synthetic", max_train=64, seed=1, transfer=TrainConfig(epochs=1, batch_size=16),
             recovery=replace(RECOVERY, max_steps=2, batch_size=16))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_magnitude_trial_row(cache: Path) -> None:
    row = run_trial(TrialSpec(task="gender", method="magnitude", compression=4, **SMALL), cache)
    assert row["status"] == "ok", row.get("traceback")
    assert set(DESIGN_COLUMNS) <= row.keys()
    assert abs(row["compression_achieved"] / 4 - 1) <= 0.10 and row["params_reduction"] > 0.7
    assert row["macs_reduction"] > 0.5 and row["size_bytes"] < 0.35 * 22_597_659
    assert row["samples_seen"] == 32 + 64  # two steps of 16, and the probe of the pruned trunk on 64 images
    assert row["start_cost_seconds"] > 0  # the transfer baseline's cost counts
    assert row["retention"] == pytest.approx(row["metric"] / row["baseline_metric"])
    assert row["synthetic"] is True


def test_etl_trial_cuts_and_caches_its_probes(cache: Path) -> None:
    spec = TrialSpec(task="head_pose", method="etl", compression=8, method_params={"probe_samples": 64}, **SMALL)
    first = run_trial(spec, cache)
    assert first["status"] == "ok", first.get("traceback")
    assert first["start_cost_seconds"] == 0.0 and first["cut_layer"] and first["probe_samples"] == 64
    assert abs(first["compression_achieved"] / 8 - 1) <= 0.10
    assert first["retention"] == pytest.approx(first["baseline_metric"] / first["metric"])  # an error metric
    assert list(cache.glob("etl-probes-*.npz"))
    again = run_trial(spec, cache)
    assert again["probe_seconds"] == first["probe_seconds"]  # read back from the cache, not recomputed
    assert again["metric"] == first["metric"]


def test_etl_budget_free_picks_its_own_operating_point(cache: Path) -> None:
    row = run_trial(TrialSpec(task="head_pose", method="etl", compression=None,
                              method_params={"probe_samples": 64}, **SMALL), cache)
    assert row["status"] == "ok", row.get("traceback")
    assert 0 < row["kept_fraction"] <= 1 and row["compression_achieved"] >= 1


def test_a_failing_trial_becomes_a_failed_row(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def nan_loss(*args, **kwargs):
        raise TrainingError("loss became nan at step 3")

    monkeypatch.setattr(trial_module, "fine_tune", nan_loss)
    row = run_trial(TrialSpec(task="gender", method="random", compression=4, **SMALL), cache)
    assert row["status"] == "failed" and "loss became nan" in row["error"] and "Traceback" in row["traceback"]


def test_infeasible_budget_is_reported(cache: Path) -> None:
    row = run_trial(TrialSpec(task="gender", method="magnitude", compression=5000, **SMALL), cache)
    assert row["status"] == "infeasible" and "above the target" in row["error"]


def test_cli_prune(cache: Path, capsys: pytest.CaptureFixture, no_data_root: None) -> None:
    args = ["prune", "--task", "gender", "--method", "random", "--compression", "2", "--max-train", "64",
            "--seed", "1", "--transfer-epochs", "1", "--recovery-steps", "2", "--cache", str(cache), "--json"]
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok" and row["method"] == "random"
    assert main([*args[:-1], "--param", "epsilon=0.1"]) == 2
    assert "does not take parameter(s) ['epsilon']" in capsys.readouterr().err
