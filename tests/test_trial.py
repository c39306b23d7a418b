"""Trials end to end on synthetic faces: the results row of design.md, ETL's cut and probe cache, failures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

import etlbench.trial as trial_module
from etlbench.cli import main
from etlbench.errors import ConfigError
from etlbench.measure import MeasureConfig
from etlbench.train import TrainConfig, TrainingError
from etlbench.transfer import TransferSpec
from etlbench.trial import RECOVERY, TrialSpec, run_trial

DESIGN_COLUMNS = ("trial_id task dataset backbone method compression seed status error metric_name higher_is_better "
                  "metric baseline_metric retention params params_reduction size_bytes macs macs_reduction "
                  "latency_ms latency_iqr_ms latency_reduction train_seconds samples_seen code_version").split()
TINY = TrainConfig(epochs=1, batch_size=16, precision="fp32")
SMALL = dict(recovery=replace(RECOVERY, max_steps=2, batch_size=16, precision="fp32"))


def setting(task: str) -> TransferSpec:
    """The small resolved setting every trial here starts from: 64 synthetic training faces, seed 1."""
    return TransferSpec(task=task, dataset="synthetic", max_train=64, seed=1, train=TINY).resolved()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
def test_magnitude_trial_row(cache: Path) -> None:
    spec = TrialSpec(setting("gender"), method="magnitude", compression=4, **SMALL)
    row = run_trial(spec, cache)
    assert row["status"] == "ok", row.get("traceback")
    assert set(DESIGN_COLUMNS) <= row.keys()
    assert row["trial_id"] == spec.trial_id() and (row["task"], row["seed"]) == ("gender", 1)
    assert abs(row["compression_achieved"] / 4 - 1) <= 0.10 and row["params_reduction"] > 0.7
    # the saved model shrinks with its parameters (buffers and the channel counts are stored too)
    assert row["macs_reduction"] > 0.5 and row["size_bytes"] < 0.35 * row["baseline_size_bytes"]
    assert row["samples_seen"] == 32 + 64  # two steps of 16, and the probe of the pruned trunk on 64 images
    assert row["start_cost_seconds"] > 0  # the transfer baseline's cost counts
    assert row["retention"] == pytest.approx(row["metric"] / row["baseline_metric"])
    assert row["synthetic"] is True and row["data_fingerprint"] == spec.setting.data_fingerprint


def fake_measurements(monkeypatch: pytest.MonkeyPatch, timings: dict[str, list[float]]) -> list[str]:
    """Replace ``measure.measure`` by one that returns the next of ``timings[model]`` as the batch-1 latency of
    ``model`` (a name: "base..." models have 4 parameters, the others 1); the names measured, in order."""
    calls, left = [], {name: iter(times) for name, times in timings.items()}

    def fake_measure(model: str, size: tuple[int, int], cfg: MeasureConfig) -> dict[str, object]:
        calls.append(model)
        return {"params": 4 if model.startswith("base") else 1, "size_bytes": 1, "macs": 1,
                "latency_ms": next(left[model]), "cpu": "x", "usable_cores": 1, "torch": "t", "allocator": "a",
                "load_avg_1m": 0.0, "threads": 1, "repeats": 30}

    monkeypatch.setattr(trial_module.measure, "measure", fake_measure)
    return calls


def test_a_model_is_measured_between_two_timings_of_its_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline timed at 20 ms, then the model at 10 ms, then the baseline at 30 ms (the machine slowed): the
    reduction is against their mean, the drift is in the row, and the later timing is handed on."""
    calls = fake_measurements(monkeypatch, {"base": [20.0, 30.0, 40.0], "pruned": [10.0, 10.0]})
    fields, after = trial_module.measure_between("pruned", "base", (8, 8), MeasureConfig())
    assert calls == ["base", "pruned", "base"] and after["latency_ms"] == 30.0
    assert fields["baseline_latency_ms"] == 25.0 and fields["latency_reduction"] == pytest.approx(0.6)
    assert fields["baseline_latency_drift"] == pytest.approx(0.4) and fields["compression_achieved"] == 4
    fields, _ = trial_module.measure_between("pruned", "base", (8, 8), MeasureConfig(), before=after)
    assert calls[3:] == ["pruned", "base"] and fields["baseline_latency_ms"] == 35.0


def test_a_measure_pass_shares_timings_within_a_setting_and_never_across(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two models of setting A, one of B, then one of A again: A's baseline is built anew after B and timed afresh;
    a model whose timing fails leaves no stale timing to the next."""
    calls = fake_measurements(monkeypatch, {"baseA": [20.0, 22.0, 24.0, 30.0, 32.0, 40.0, 42.0],
                                            "baseB": [50.0, 52.0], "a": [10.0, 10.0, 10.0, 10.0], "b": [10.0]})
    built = []

    def spec(name: str) -> SimpleNamespace:
        return SimpleNamespace(setting=SimpleNamespace(key=lambda: name), measure=MeasureConfig())

    def load_baseline(s: SimpleNamespace) -> str:
        built.append(s.setting.key())
        return "base" + s.setting.key()

    measure_next = trial_module.MeasurePass(load_baseline)
    rows = [measure_next(spec(k), k.lower(), (8, 8)) for k in ("A", "A", "B", "A")]
    assert built == ["A", "B", "A"]
    assert calls == ["baseA", "a", "baseA", "a", "baseA", "baseB", "b", "baseB", "baseA", "a", "baseA"]
    assert [r["baseline_latency_ms"] for r in rows] == [21.0, 23.0, 51.0, 31.0]
    monkeypatch.setattr(trial_module, "measure_between", lambda *a: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        measure_next(spec("A"), "a", (8, 8))
    monkeypatch.undo()
    calls = fake_measurements(monkeypatch, {"baseA": [60.0, 62.0], "a": [10.0]})
    assert measure_next(spec("A"), "a", (8, 8))["baseline_latency_ms"] == 61.0 and calls == ["baseA", "a", "baseA"]


@pytest.mark.slow
def test_etl_trial_cuts_and_caches_its_probes(cache: Path) -> None:
    spec = TrialSpec(setting("head_pose"), method="etl", compression=8, method_params={"probe_samples": 64}, **SMALL)
    first = run_trial(spec, cache)
    assert first["status"] == "ok", first.get("traceback")
    assert first["start_cost_seconds"] == 0.0 and first["cut_layer"] and first["probe_samples"] == 64
    assert abs(first["compression_achieved"] / 8 - 1) <= 0.10
    assert first["retention"] == pytest.approx(first["baseline_metric"] / first["metric"])  # an error metric
    assert len(list(cache.glob("etl-probes-*.npz"))) == 1
    again = run_trial(spec, cache)
    assert again["probe_seconds"] == first["probe_seconds"]  # read back from the cache, not recomputed
    assert again["metric"] == first["metric"] and again["cut_layer"] == first["cut_layer"]
    assert len(list(cache.glob("etl-probes-*.npz"))) == 1


@pytest.mark.slow
def test_a_distilled_trial_reads_one_cached_teacher_and_counts_the_transfer(cache: Path) -> None:
    """With a teacher, ETL's start cost includes the transfer baseline's training (the teacher is a transferred
    network); the teacher's outputs are computed once per setting; the row holds the anytime curve."""
    recipe = replace(RECOVERY, samples=48, batch_size=16, distill=0.5, norm="batch", precision="fp32",
                     eval_at=(0.5, 1.0))  # fp32, not the recipe's bf16: the row records the spec's
    spec = TrialSpec(setting("head_pose"), method="etl", compression=4, method_params={"probe_samples": 64},
                     recovery=recipe)
    row = run_trial(spec, cache)
    assert row["status"] == "ok", row.get("traceback")
    assert row["start_cost_seconds"] == row["baseline_train_seconds"] > 0
    assert row["start_cost_samples"] == row["baseline_samples_seen"] > 0
    assert row["precision"] == "fp32"
    teachers = list((cache / "transfer").glob("teacher-*.npy"))
    assert len(teachers) == 1
    stamp = teachers[0].stat().st_mtime_ns
    curve = row["recovery_curve"]
    assert [p["samples"] for p in curve] == [64, 64 + 32, 64 + 48]  # the probe pass, then half and all the budget
    assert curve[-1]["best_test_mae_deg"] == row["metric"]
    assert run_trial(replace(spec, compression=8), cache)["status"] == "ok"
    assert teachers[0].stat().st_mtime_ns == stamp  # read, not computed again


@pytest.mark.slow
def test_etl_budget_free_picks_its_own_operating_point(cache: Path) -> None:
    row = run_trial(TrialSpec(setting("head_pose"), method="etl", compression=None,
                              method_params={"probe_samples": 64}, **SMALL), cache)
    assert row["status"] == "ok", row.get("traceback")
    assert 0 < row["kept_fraction"] <= 1 and row["compression_achieved"] >= 1 and row["cut_layer"]


@pytest.mark.slow
def test_a_failing_trial_becomes_a_failed_row(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def nan_loss(*args, **kwargs):
        raise TrainingError("loss became nan at step 3")

    monkeypatch.setattr(trial_module, "probe_then_fine_tune", nan_loss)
    spec = TrialSpec(setting("gender"), method="random", compression=4, **SMALL)
    row = run_trial(spec, cache)
    assert row["status"] == "failed" and "loss became nan" in row["error"] and "Traceback" in row["traceback"]
    assert row["trial_id"] == spec.trial_id() and row["method"] == "random"  # the header is kept


@pytest.mark.slow
def test_infeasible_budget_is_reported(cache: Path) -> None:
    row = run_trial(TrialSpec(setting("gender"), method="magnitude", compression=5000, **SMALL), cache)
    assert row["status"] == "infeasible" and "above the target" in row["error"]
    assert "metric" not in row and "baseline_metric" in row  # nothing was trained or measured


def test_a_bad_configuration_fails_before_any_training(tmp_path: Path) -> None:
    gender = setting("gender")
    with pytest.raises(ConfigError, match="cannot choose its own operating point") as err:
        TrialSpec(gender, method="magnitude", compression=None).configure()
    with pytest.raises(ConfigError, match="does not take parameter 'epsilon'") as err:
        TrialSpec(gender, method="random", compression=2, method_params={"epsilon": 0.1}).configure()
    assert err.value.key == "epsilon"
    with pytest.raises(ConfigError, match="at least 1") as err:
        TrialSpec(gender, method="random", compression=0.5).configure()
    assert err.value.key == "compression"
    method, budget = TrialSpec(gender, method="etl", compression=None).configure()
    assert method.name == "etl" and budget is None
    row = run_trial(TrialSpec(gender, method="random", compression=2, method_params={"epsilon": 0.1}), tmp_path)
    assert row["status"] == "failed" and row["error"].startswith("ConfigError: ")
    assert not any(tmp_path.iterdir())  # no transfer baseline was trained for it


def test_trial_ids_follow_what_determines_the_trial() -> None:
    gender = setting("gender")
    spec = TrialSpec(gender, method="magnitude", compression=4.0)
    assert spec.trial_id() == TrialSpec(gender, method="magnitude", compression=4.0).trial_id()
    others = [replace(spec, compression=8.0), replace(spec, method="random"), replace(spec, budget_of="macs"),
              replace(spec, recovery=replace(RECOVERY, max_steps=2, precision="fp32")),
              replace(spec, method_params={"policy": "uniform"}), replace(spec, setting=replace(gender, seed=2)),
              replace(spec, setting=replace(gender, max_train=32))]
    ids = {spec.trial_id(), *(o.trial_id() for o in others)}
    assert len(ids) == 1 + len(others)
    assert (spec.task, spec.seed, spec.backbone) == ("gender", 1, gender.backbone)


def test_an_integer_compression_is_the_same_trial() -> None:
    gender = setting("gender")
    assert TrialSpec(gender, "magnitude", 4).trial_id() == TrialSpec(gender, "magnitude", 4.0).trial_id()


@pytest.mark.slow
def test_cli_prune(cache: Path, capsys: pytest.CaptureFixture, no_data_root: None) -> None:
    args = ["prune", "--task", "gender", "--method", "random", "--compression", "2", "--max-train", "64",
            "--seed", "1", "--transfer-epochs", "1", "--recovery-steps", "2", "--precision", "fp32", "--cache",
            str(cache), "--json"]
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok" and row["method"] == "random" and row["dataset"] == "synthetic"
    assert row["precision"] == "fp32"
    assert main([*args[:-1], "--param", "epsilon=0.1"]) == 2
    err = capsys.readouterr().err
    assert "method 'random' does not take parameter 'epsilon'; it takes: [" in err and "'policy'" in err
