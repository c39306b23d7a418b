"""The shared recovery after pruning: function-preserving conv balancing, the probe-started head, the floor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from etlbench.backbones import create_backbone
from etlbench.data import load_dataset, task_data
from etlbench.probe import PROBE_TOL, fit_probe, probe_outputs, trunk_features
from etlbench.tasks import create_task
from etlbench.train import TrainConfig, balance_conv_scales, build_task_model, predict
from etlbench.trial import PROBE_SCALE_FLOOR, recover


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
    cfg = TrainConfig(epochs=1, max_steps=1, lr=0.0, batch_size=16, probe_head=True, balance_convs=True)
    result = recover(model, data, source.preprocess, size, cfg, seed=2)
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
