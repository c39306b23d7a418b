"""The transfer baseline end to end: deterministic, saved, reloadable, and honest about synthetic data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from etlbench.backbones import create_backbone
from etlbench.cli import main
from etlbench.data import load_dataset, task_data
from etlbench.probe import ALPHAS, CS, fit_probe, head_from_probe, linear_probe, probe_strength
from etlbench.tasks import create_task
from etlbench.train import TrainConfig, build_task_model, evaluate
from etlbench.transfer import TransferSpec, checkpoint_path, run_transfer

TINY = TrainConfig(epochs=1, batch_size=16)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("transfer")
    spec = TransferSpec(task="head_pose", dataset="synthetic", max_train=48, seed=3, train=TINY)
    return run_transfer(spec, out / "a"), run_transfer(spec, out / "b")


def test_transfer_is_deterministic_for_a_seed(two_runs: tuple[dict, dict]) -> None:
    a, b = two_runs
    assert a["metric"] == b["metric"] and a["metrics"] == b["metrics"]
    sa = torch.load(a["checkpoint"], weights_only=True)["state_dict"]
    sb = torch.load(b["checkpoint"], weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_reloads_and_reproduces_the_test_metric(two_runs: tuple[dict, dict]) -> None:
    row = two_runs[0]
    saved = torch.load(row["checkpoint"], weights_only=True)
    assert json.loads(saved["row"])["metric"] == row["metric"]
    task, source = create_task("head_pose"), create_backbone(row["backbone"])
    data = task_data(task, load_dataset("synthetic", seed=3), max_train=48, seed=3)
    model = build_task_model(source, task, data.targets["train"])
    model.load_state_dict(saved["state_dict"])
    size = tuple(row["input_size"])
    again = evaluate(model, task, data.images["test"], data.targets["test"], source.preprocess, size)
    assert again["mae_deg"] == pytest.approx(row["metric"], rel=1e-6)


def test_row_reports_cost_and_size(two_runs: tuple[dict, dict]) -> None:
    row = two_runs[0]
    assert row["synthetic"] and "SYNTHETIC" in row["note"]
    assert row["samples_seen"] == 48 and row["train_seconds"] > 0
    assert row["params"] == 5_614_592 - 256 * 128 + 256 * 3 + 3  # source trunk + new 3-output head
    assert row["macs"] > 100e6 and row["size_bytes"] > 4 * row["params"]
    assert row["input_size"] == [112, 112]


def test_cli_json_says_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture, no_data_root: None) -> None:
    assert main(["transfer", "--task", "gender", "--max-train", "32", "--epochs", "1", "--batch-size", "16",
                 "--json", "--out", str(tmp_path)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["dataset"] == "synthetic" and row["synthetic"] is True
    assert 0.0 <= row["metric"] <= 1.0 and Path(row["checkpoint"]).is_file()


def test_cli_errors_are_clear(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["transfer", "--task", "gendr"]) == 2
    assert "Did you mean: gender" in capsys.readouterr().err
    assert main(["transfer", "--task", "age", "--data-root", str(tmp_path)]) == 2
    assert "utkface/utkface_64.npz: file not found" in capsys.readouterr().err


def test_linear_probe_on_real_faces_reads_gender(real_data_root: Path) -> None:
    """The real dlib weights carry gender: a probe on 1,500 UTKFace faces is far above chance (~52%)."""
    task = create_task("gender")
    data = task_data(task, load_dataset("utkface", real_data_root), max_train=1500, seed=0)
    result = linear_probe(create_backbone("dlib-resnet29"), data, (112, 112))
    assert result.metrics["accuracy"] > 0.85


@pytest.mark.parametrize(("task_name", "make_y"), [
    ("gender", lambda x: (x[:, 0] + x[:, 1] > 0).astype(np.int64)),
    ("emotion", lambda x: np.argmax(x[:, :7], 1)),
    ("age", lambda x: 30 + 10 * x[:, :1] + 5 * x[:, 1:2]),
    ("head_pose", lambda x: 20 * x[:, :3]),
])
def test_head_starts_exactly_at_the_linear_probe(task_name: str, make_y) -> None:
    """Linear probe, then fine-tune: the head computes the probe's predictions before any training."""
    task = create_task(task_name)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)) * rng.uniform(0.5, 3, 12) + rng.normal(size=12)
    y = make_y(x).astype(np.float32 if task.kind == "regression" else np.int64)
    probe = fit_probe(task, x, y)
    head = task.make_head(12, y)
    head_from_probe(head, probe, task)
    out = head(torch.from_numpy(x).float()[:, :, None, None]).detach().numpy()
    if task.kind == "regression":
        np.testing.assert_allclose(out, np.asarray(probe.predict(x)).reshape(out.shape), rtol=1e-4, atol=1e-3)
    else:
        np.testing.assert_array_equal(out.argmax(1), probe.predict(x))


@pytest.mark.parametrize("task_name", ["gender", "age"])
def test_probe_strength_is_chosen_by_cross_validation_then_reused(task_name: str) -> None:
    """ETL cross-validates the regularisation once and refits every other probe at exactly that strength."""
    task = create_task(task_name)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 20))
    signal = x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=1.0, size=400)
    y = (signal > 0).astype(np.int64) if task.kind == "classification" else (40 + 10 * signal).astype(np.float32)
    grid = CS if task.kind == "classification" else ALPHAS
    chosen = probe_strength(fit_probe(task, x, y))
    assert chosen in grid
    refit = fit_probe(task, x[:, :5], y, strength=chosen)
    assert probe_strength(refit) == chosen and refit[-1].coef_.size in (5, 2 * 5)
    # more regularisation (the smallest C, the largest alpha) shrinks the weights
    most, least = (grid.min(), grid.max()) if task.kind == "classification" else (grid.max(), grid.min())
    norms = {s: np.abs(fit_probe(task, x, y, strength=s)[-1].coef_).sum() for s in (most, least)}
    assert norms[most] < norms[least]


def test_baseline_key_names_the_data_not_its_spelling(tmp_path: Path, no_data_root: None) -> None:
    own = TransferSpec(task="gender", data_root=str(tmp_path))
    named = replace(own, dataset="utkface")
    assert checkpoint_path(own, tmp_path) == checkpoint_path(named, tmp_path)
    assert checkpoint_path(replace(own, dataset="synthetic"), tmp_path) != checkpoint_path(own, tmp_path)
    assert checkpoint_path(replace(own, seed=1), tmp_path) != checkpoint_path(own, tmp_path)
