"""The transfer baseline end to end: deterministic, saved, reloadable, cached, and honest about synthetic data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import etlbench.transfer as transfer_module
from etlbench.backbones import create_backbone
from etlbench.cli import main
from etlbench.data import load_dataset, task_data
from etlbench.probe import ALPHAS, CS, fit_probe, head_from_probe, linear_probe, probe_strength
from etlbench.tasks import create_task
from etlbench.train import TrainConfig, build_task_model, evaluate
from etlbench.transfer import TransferSpec, checkpoint_path, transfer_baseline

TINY = TrainConfig(epochs=1, batch_size=16, precision="fp32")
SPEC = TransferSpec(task="head_pose", dataset="synthetic", max_train=48, seed=3, train=TINY)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[Path, dict], tuple[Path, dict]]:
    """The same baseline trained twice, in two cache folders: (checkpoint path, row) of each."""
    out = tmp_path_factory.mktemp("transfer")
    spec = SPEC.resolved()
    runs = []
    for folder in (out / "a", out / "b"):
        _, row = transfer_baseline(spec, folder)
        runs.append((checkpoint_path(spec, folder), row))
    return runs[0], runs[1]


@pytest.mark.slow
def test_transfer_is_deterministic_for_a_seed(two_runs: tuple[tuple[Path, dict], tuple[Path, dict]]) -> None:
    (path_a, a), (path_b, b) = two_runs
    assert a["metric"] == b["metric"] and a["metrics"] == b["metrics"]
    sa = torch.load(path_a, weights_only=True)["state_dict"]
    sb = torch.load(path_b, weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_checkpoint_reloads_and_reproduces_the_test_metric(two_runs: tuple[tuple[Path, dict], tuple[Path, dict]]
                                                           ) -> None:
    path, row = two_runs[0]
    assert row["checkpoint"] == path.name  # the row names the file, not the folder it was written to
    saved = torch.load(path, weights_only=True)
    assert json.dumps(json.loads(saved["meta"]["row"]), sort_keys=True) == json.dumps(row, sort_keys=True)
    task, source = create_task("head_pose"), create_backbone(row["backbone"])
    data = SPEC.resolved().load_data(source)  # resized once to the input size, as training and testing saw it
    model = build_task_model(source, task, data.targets["train"])
    model.load_state_dict(saved["state_dict"])
    size = tuple(row["input_size"])
    again = evaluate(model, task, data.images["test"], data.targets["test"], source.preprocess, size)
    assert again["mae_deg"] == pytest.approx(row["metric"], rel=1e-6)


@pytest.mark.slow
def test_a_cached_baseline_is_read_not_trained(two_runs: tuple[tuple[Path, dict], tuple[Path, dict]],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path, row = two_runs[0]

    def no_training(*args, **kwargs):
        raise AssertionError("the baseline was trained again")

    monkeypatch.setattr(transfer_module, "_train_baseline", no_training)
    model, again = transfer_baseline(SPEC.resolved(), path.parent)
    assert json.dumps(again, sort_keys=True) == json.dumps(row, sort_keys=True) and not model.training
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    with pytest.raises(AssertionError, match="trained again"):  # another setting is not in the cache
        transfer_baseline(replace(SPEC, max_train=40).resolved(), path.parent)


@pytest.mark.slow
def test_row_reports_cost_and_size(two_runs: tuple[tuple[Path, dict], tuple[Path, dict]]) -> None:
    row = two_runs[0][1]
    assert row["synthetic"] and "SYNTHETIC" in row["note"]
    assert row["samples_seen"] == 48 + 48 and row["train_seconds"] > 0  # one epoch, and the head probe's pass
    assert row["params"] == 5_614_592 - 256 * 128 + 256 * 3 + 3  # source trunk + new 3-output head
    assert row["macs"] > 100e6 and row["size_bytes"] > 4 * row["params"]
    assert row["input_size"] == [112, 112]
    assert row["data_fingerprint"] == SPEC.resolved().data_fingerprint


@pytest.mark.slow
def test_cli_json_says_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture, no_data_root: None) -> None:
    args = ["transfer", "--task", "gender", "--max-train", "32", "--epochs", "1", "--batch-size", "16", "--json",
            "--precision", "fp32", "--out", str(tmp_path)]
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["dataset"] == "synthetic" and row["synthetic"] is True and row["precision"] == "fp32"
    assert 0.0 <= row["metric"] <= 1.0 and Path(row["checkpoint"]).is_file() and row["cached"] is False
    assert Path(row["checkpoint"]).parent == tmp_path  # the command prints the full path
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)  # the second time it is read from the cache
    assert again["cached"] is True and again["checkpoint"] == row["checkpoint"] and again["metric"] == row["metric"]


def test_cli_errors_are_clear(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["transfer", "--task", "gendr"]) == 2
    assert "Did you mean: gender" in capsys.readouterr().err
    assert main(["transfer", "--task", "age", "--data-root", str(tmp_path)]) == 2
    assert "utkface/utkface_64.npz: file not found" in capsys.readouterr().err


@pytest.mark.slow
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
    own = TransferSpec(task="gender").resolved()  # no data root: the task's data is synthetic
    assert own.dataset == "synthetic" and own.data_fingerprint
    named = TransferSpec(task="gender", dataset="synthetic").resolved()
    assert checkpoint_path(own, tmp_path) == checkpoint_path(named, tmp_path)
    assert checkpoint_path(replace(own, seed=1).resolved(), tmp_path) != checkpoint_path(own, tmp_path)
    assert checkpoint_path(replace(own, max_train=10), tmp_path) != checkpoint_path(own, tmp_path)
    assert checkpoint_path(replace(own, train=TINY), tmp_path) != checkpoint_path(own, tmp_path)
    assert checkpoint_path(own, tmp_path).name.startswith("transfer-gender-dlib-resnet29-seed0-")
    with pytest.raises(ValueError, match="not resolved"):
        TransferSpec(task="gender", dataset="synthetic").key()
