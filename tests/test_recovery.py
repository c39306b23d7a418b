"""The shared recovery after pruning: function-preserving conv balancing, the probe-started head, the floor."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from etlbench.backbones import Preprocess, create_backbone
from etlbench.data import load_dataset, task_data
from etlbench.probe import PROBE_TOL, fit_probe, probe_outputs, trunk_features
from etlbench.tasks import create_task
from etlbench.train import (
    TrainConfig,
    TrainingError,
    _norms,
    _schedule,
    balance_conv_scales,
    build_task_model,
    evaluate,
    fine_tune,
    predict,
    prepare,
    recalibrate_norms,
    resolve_device,
    standardize_norms,
)
from etlbench.transfer import PROBE_SCALE_FLOOR, probe_then_fine_tune


def conv_bn_net() -> nn.Sequential:
    """Convs with tiny weights (as dlib's folded norms leave them) and norms with real running statistics."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(1e-3)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1e-3, 1e-3)
                m.running_var.uniform_(1e-6, 1e-5)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    return net.eval()


def test_balancing_keeps_the_function_and_gives_he_scale() -> None:
    net = conv_bn_net()
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        before = net(x)
        assert balance_conv_scales(net) == 2  # the last conv has no norm after it and keeps its scale
        after = net(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    for conv in (net[0], net[3]):
        rms = conv.weight.pow(2).mean().sqrt().item()
        assert rms == pytest.approx(math.sqrt(2 / conv.weight[0].numel()), rel=1e-5)
    assert net[6].weight.abs().max() < 1e-2


def test_balancing_keeps_the_dlib_network() -> None:
    source = create_backbone("dlib-resnet29").eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        before = source(x)
        assert balance_conv_scales(source) == 29
        torch.testing.assert_close(source(x), before, rtol=0, atol=1e-5)


def test_floored_scaler_bounds_the_weight_of_a_nearly_dead_feature() -> None:
    task = create_task("age")
    rng = np.random.default_rng(0)
    live = rng.normal(size=(300, 5))
    dead = 1e-6 * rng.normal(size=(300, 1))
    x = np.hstack([live, dead])
    y = (40 + 10 * live[:, 0] + 2e6 * dead[:, 0] + rng.normal(size=300)).astype(np.float32)  # reads the dead one
    plain, floored = fit_probe(task, x, y), fit_probe(task, x, y, scale_floor=PROBE_SCALE_FLOOR)
    assert floored[0].scale_[-1] == pytest.approx(PROBE_SCALE_FLOOR * np.sqrt(floored[0].var_).mean())
    raw = [abs(p[-1].coef_[-1] / p[0].scale_[-1]) for p in (plain, floored)]  # weight on the raw feature
    assert raw[1] < 1e-3 * raw[0]
    np.testing.assert_allclose(floored[0].scale_[:5], plain[0].scale_[:5])


@pytest.mark.parametrize("task_name", ["gender", "head_pose"])
def test_recovery_starts_at_the_probe_of_the_pruned_trunk(task_name: str) -> None:
    """With a zero learning rate, recovery leaves the model at its starting point: the probe-started head."""
    task = create_task(task_name)
    data = task_data(task, load_dataset("synthetic", seed=2), max_train=96, seed=2)
    source = create_backbone("dlib-resnet29")
    size = (112, 112)
    model = build_task_model(source, task, data.targets["train"], cut="res3_1", seed=2)
    cfg = TrainConfig(epochs=1, max_steps=1, lr=0.0, batch_size=16, precision="fp32")
    result = probe_then_fine_tune(model, data, source.preprocess, size, cfg, seed=2)
    assert result.samples_seen == 16 + 96  # one step of 16, plus the probe's pass over the training split
    train_x = trunk_features(model.trunk, data.images["train"], source.preprocess, size)
    probe = fit_probe(task, train_x, data.targets["train"], 2, tol=PROBE_TOL, scale_floor=PROBE_SCALE_FLOOR)
    val_x = trunk_features(model.trunk, data.images["val"], source.preprocess, size)
    expected = probe_outputs(probe, task, val_x)
    got = predict(model, data.images["val"], source.preprocess, size)
    if task.kind == "regression":
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-2)
    else:
        np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))


def small_setup(task_name: str = "head_pose", cut: str = "res3_1"):
    task = create_task(task_name)
    data = task_data(task, load_dataset("synthetic", seed=2), max_train=96, seed=2)
    source = create_backbone("dlib-resnet29")
    size = (104, 104)  # dlib's smallest input
    return data.at_size(size), source, size, build_task_model(source, task, data.targets["train"], cut=cut, seed=2)


def test_standardized_norms_keep_the_function_and_hold_the_data_statistics() -> None:
    """dlib's folded norms re-expressed with the data's statistics: eval mode computes the same, and train mode
    (batch statistics) now computes nearly the same instead of a ~15x different network."""
    data, source, size, model = small_setup()
    x = data.images["train"][:64]
    before = predict(model, x, source.preprocess, size)
    assert standardize_norms(model, x, source.preprocess, size) == len(_norms(model)) > 0
    np.testing.assert_allclose(predict(model, x, source.preprocess, size), before, rtol=1e-3, atol=1e-3)
    model.train()
    with torch.no_grad():
        batch_mode = model(source.preprocess(torch.from_numpy(x), size)).numpy()
    np.testing.assert_allclose(batch_mode, before, rtol=0.05, atol=0.05 * np.abs(before).mean())


def test_recalibration_sets_the_statistics_of_the_data_and_keeps_the_affine() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 2)
    weight = net[1].weight.detach().clone()
    images = np.random.default_rng(0).integers(0, 255, (40, 16, 16, 3), dtype=np.uint8)
    pre = Preprocess(input_size=(16, 16), mean=(127.5,) * 3, std=(64.0,) * 3, min_size=8)
    assert recalibrate_norms(net, images, pre, (16, 16), batch_size=20) == 1  # two equal batches
    with torch.no_grad():
        conv_out = net[0](pre(torch.from_numpy(images), (16, 16)))
    torch.testing.assert_close(net[1].running_mean, conv_out.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net[1].weight, weight)
    assert net[1].momentum == 0.1 and not net[1].training


def test_budget_is_in_samples_with_anytime_evaluations() -> None:
    cfg = TrainConfig(samples=100, batch_size=16, eval_at=(0.25, 0.5, 1.0))
    assert cfg.total_steps(n_train=40) == 7  # ceil(100 / 16): epochs follow from the split's size
    assert cfg.eval_steps(n_train=40) == [2, 4, 7]
    assert TrainConfig(epochs=2, batch_size=16).eval_steps(n_train=40) == [3, 6]  # () is once an epoch
    with pytest.raises(ValueError, match="norm: expected one of"):
        TrainConfig(norm="train")
    with pytest.raises(ValueError, match="distill"):
        TrainConfig(distill=1.5)


def test_warm_up_then_cosine() -> None:
    factor = _schedule(total_steps=100, warmup=0.1)
    assert [factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert factor(10) == pytest.approx(1.0) and factor(55) == pytest.approx(0.5) and factor(100) == pytest.approx(0)
    assert _schedule(total_steps=10, warmup=0.0)(0) == 1.0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fine_tune_records_the_selected_models_test_metric_at_every_evaluation(precision: str) -> None:
    data, source, size, model = small_setup()
    cfg = TrainConfig(samples=64, batch_size=16, lr=1e-3, eval_at=(0.5, 1.0), norm="batch", precision=precision)
    prepare(model, data.images["train"], source.preprocess, size, cfg)
    result = fine_tune(model, data, source.preprocess, size, cfg, seed=2)
    assert [p["step"] for p in result.history] == [0, 2, 4]
    assert [p["samples"] for p in result.history] == [0, 32, 64]
    assert all(p["seconds"] >= 0 for p in result.history)
    name = data.task.metric_name
    assert result.history[-1][f"best_test_{name}"] == result.test_metrics[name]
    test = evaluate(model, data.task, data.images["test"], data.targets["test"], source.preprocess, size)
    assert test[name] == pytest.approx(result.test_metrics[name], rel=1e-5)  # the kept model is the one tested
    assert next(model.parameters()).is_contiguous()  # trained channels-last, handed back in the standard layout


def test_without_anytime_test_only_the_start_and_the_selection_are_tested(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same training, selection and test metric as with the curve's test at every selection; test passes only
    for the start (the model before recovery) and the final selection."""
    import etlbench.train as train

    data, source, size, model = small_setup("gender")  # val selects the models of steps 2 and 6
    cfg = TrainConfig(samples=96, batch_size=16, lr=3e-4, eval_at=(1 / 3, 2 / 3, 1.0), precision="fp32")
    prepare(model, data.images["train"], source.preprocess, size, cfg)
    twin = copy.deepcopy(model)
    tested: list[int] = []
    real = train.scored
    monkeypatch.setattr(train, "scored", lambda *a, **k: (tested.append(a[2] is data.images["test"]), real(*a, **k))[1])
    full = fine_tune(model, data, source.preprocess, size, cfg, seed=2)
    n_full, tested[:] = sum(tested), []
    ends = fine_tune(twin, data, source.preprocess, size, replace(cfg, anytime_test=False), seed=2)
    name = data.task.metric_name
    assert ends.test_metrics == full.test_metrics and ends.best_step == full.best_step > 0
    assert sum(tested) == 2 < n_full  # the start, then the selection at the end
    key = f"best_test_{name}"
    assert key in ends.history[0] and key in ends.history[-1]  # before recovery, and the final selection
    assert all(p[key] == q[key] for p, q in zip(ends.history, full.history, strict=True) if key in p)
    assert any(key not in p for p in ends.history)  # a model selected on the way was not tested
    assert [p[f"val_{name}"] for p in ends.history] == [p[f"val_{name}"] for p in full.history]


def test_distilling_from_the_labels_is_training_on_them() -> None:
    """A teacher whose outputs are the labels (the flipped column: the flipped labels) and a weight of 1 train
    exactly as the task loss does: the term reaches the optimiser and flipped images read flipped outputs."""
    data, source, size, model = small_setup("head_pose")
    y = torch.from_numpy(data.targets["train"])
    teacher = torch.stack([y, data.task.flip_targets(y)], dim=1).numpy()
    twin = copy.deepcopy(model)
    cfg = TrainConfig(samples=48, batch_size=16, lr=1e-4, trunk_lr_scale=0.1, eval_at=(1.0,),  # raw dlib scales
                      precision="fp32")
    plain = fine_tune(model, data, source.preprocess, size, cfg, seed=2)
    taught = fine_tune(twin, data, source.preprocess, size, replace(cfg, distill=1.0), seed=2, teacher=teacher)
    assert taught.history[-1]["train_loss"] == plain.history[-1]["train_loss"]
    shifted = fine_tune(copy.deepcopy(twin), data, source.preprocess, size, replace(cfg, distill=1.0), seed=2,
                        teacher=teacher + 5.0)
    assert shifted.history[-1]["train_loss"] > plain.history[-1]["train_loss"]


def test_images_are_resized_once_as_preprocessing_would() -> None:
    data = task_data(create_task("gender"), load_dataset("synthetic", seed=2), max_train=32, seed=2)
    pre = create_backbone("dlib-resnet29").preprocess
    small = data.at_size((120, 110))
    assert small.images["train"].shape[1:3] == (120, 110) and small.images["train"].dtype == np.uint8
    assert small.at_size((120, 110)) is small
    once = pre(torch.from_numpy(small.images["val"]), (120, 110))
    every_time = pre(torch.from_numpy(data.images["val"]), (120, 110))
    assert (once - every_time).abs().max().item() <= 0.5 / 256 + 1e-6  # rounding to uint8 only


def test_a_gpu_trains_in_fp32_without_tf32_and_one_torch_cannot_see_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainingError, match=r"device 'cuda' was asked for \(the spec's gpus\), but torch sees no CUDA"):
        resolve_device("cuda")
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32  # C flags: restored by hand
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # cuDNN's default is True
        assert resolve_device("cpu") == torch.device("cpu") and torch.backends.cudnn.allow_tf32  # the CPU: untouched
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert resolve_device("cuda:1") == torch.device("cuda", 1)
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
