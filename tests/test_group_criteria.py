"""Torch-Pruning's group criteria in etlbench: the same importance per channel group as Torch-Pruning computes, and
the same channels removed as Torch-Pruning's own pruner removes (uniform policy) on a small ResNet."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from etlbench import measure
from etlbench.backbones import ChannelPad, create_backbone
from etlbench.methods import PruneContext, create_method
from etlbench.surgery import Budget, group_importance, prune_channels, without_channel_pads
from etlbench.tasks import create_task
from etlbench.train import TaskModel, build_task_model

SIZE = (64, 64)
CRITERIA = ("l2", "fpgm", "lamp", "bn-scale")


@pytest.fixture(scope="module")
def resnet() -> TaskModel:
    torch.manual_seed(0)
    model = build_task_model(create_backbone("timm/resnet18"), create_task("gender"), np.zeros(4, np.int64)).eval()
    with torch.no_grad():  # batch norms as after training: scales that differ between channels
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.1, 2.0)
    return model


def _tp_groups(model: TaskModel) -> list[tp.Group]:
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 3, *SIZE))
    return list(graph.get_all_groups(ignored_layers=[model.head.fc], root_module_types=[nn.Conv2d, nn.Linear]))


def _context(model: TaskModel) -> PruneContext:
    return PruneContext(None, None, SIZE, 0, measure.count_params(model), measure.count_macs(model, SIZE),  # type: ignore[arg-type]
                        transfer_model=lambda: model, setting_key="test")


@pytest.mark.parametrize("name", CRITERIA)
def test_group_importance_is_torch_prunings(resnet: TaskModel, name: str) -> None:
    method = create_method(name)
    ours = group_importance(resnet, method.importance(resnet, _context(resnet)), SIZE)
    theirs = [method.criterion()(g) for g in _tp_groups(resnet)]
    assert len(ours) == len(theirs) and sum(o is not None for o in ours) >= 8
    for a, b in zip(ours, theirs, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
            assert len(torch.unique(a)) > 1  # a ranking, not a constant


@pytest.mark.parametrize("name", CRITERIA)
def test_the_same_channels_go_as_with_torch_prunings_pruner(resnet: TaskModel, name: str) -> None:
    method = create_method(name)
    ours = prune_channels(resnet, method.importance(resnet, _context(resnet)), 0.5, SIZE, policy="uniform")
    theirs = copy.deepcopy(resnet)
    tp.pruner.MetaPruner(theirs, torch.zeros(1, 3, *SIZE), importance=method.criterion(), pruning_ratio=0.5,
                         ignored_layers=[theirs.head.fc]).step()
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    assert measure.count_params(ours) < 0.4 * measure.count_params(resnet)


def test_rows_name_the_library_and_budgets_are_met(resnet: TaskModel) -> None:
    outcome = create_method("fpgm").prune(_context(resnet), Budget(4.0))
    assert outcome.status == "ok" and outcome.fields["criterion_library"].startswith("torch-pruning 1.")
    assert abs(measure.count_params(resnet) / outcome.params / 4 - 1) <= 0.1


def test_channel_pads_are_no_evidence() -> None:
    """dlib's ResNet pads channels with fixed 1x1 convolutions: a group criterion reads the group without them."""
    model = build_task_model(create_backbone("dlib-resnet29"), create_task("gender"), np.zeros(4, np.int64)).eval()
    size, criterion = (112, 112), create_method("l2").criterion()
    ours = group_importance(model, criterion, size)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 3, *size))
    groups = list(graph.get_all_groups(ignored_layers=[model.head.fc], root_module_types=[nn.Conv2d, nn.Linear]))
    padded = [i for i, g in enumerate(groups) if any(isinstance(item.dep.layer, ChannelPad) for item in g)]
    assert padded
    for i in padded:
        torch.testing.assert_close(ours[i], criterion(without_channel_pads(groups[i])))
        assert not torch.allclose(ours[i], criterion(groups[i]))
