"""Torch-Pruning's group criteria in etlbench: the same importance per channel group as Torch-Pruning computes, and
the same channels removed as Torch-Pruning's own pruner removes (uniform policy) on a small ResNet."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from etlbench import measure
from etlbench.backbones import ChannelPad, create_backbone
from etlbench.methods import ConfigError, PruneContext, create_method
from etlbench.surgery import Budget, group_importance, prune_channels, without_channel_pads
from etlbench.tasks import create_task
from etlbench.train import TaskModel, build_task_model, set_train_mode

SIZE = (64, 64)
CRITERIA = ("l2", "fpgm", "lamp", "bn-scale")  # data-free: hessian is tested with data below


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
    theirs = [method.criterion(resnet)(g) for g in _tp_groups(resnet)]
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
    tp.pruner.MetaPruner(theirs, torch.zeros(1, 3, *SIZE), importance=method.criterion(theirs), pruning_ratio=0.5,
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
    size, criterion = (112, 112), create_method("l2").criterion(model)
    ours = group_importance(model, criterion, size)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 3, *size))
    groups = list(graph.get_all_groups(ignored_layers=[model.head.fc], root_module_types=[nn.Conv2d, nn.Linear]))
    padded = [i for i, g in enumerate(groups) if any(isinstance(item.dep.layer, ChannelPad) for item in g)]
    assert padded
    for i in padded:
        torch.testing.assert_close(ours[i], criterion(without_channel_pads(groups[i])))
        assert not torch.allclose(ours[i], criterion(groups[i]))


def test_hessian_reads_the_fisher_of_every_sample_and_leaves_no_gradients(resnet: TaskModel) -> None:
    """Group OBD through Torch-Pruning with the mean squared per-sample gradient (Torch-Pruning 1.6.1's own
    accumulate_grad would keep only the last sample's), and the model is left without gradients."""
    rng = np.random.default_rng(0)
    task, source = create_task("gender"), create_backbone("timm/resnet18")
    images, labels = rng.integers(0, 255, (6, 64, 64, 3), dtype=np.uint8), np.array([0, 1, 0, 1, 1, 0])
    ctx = _context(resnet)
    ctx.data, ctx.source = SimpleNamespace(images={"train": images}, targets={"train": labels}, task=task), source
    method = create_method("hessian", samples=6)
    ours = group_importance(resnet, method.importance(resnet, ctx), SIZE)
    assert all(p.grad is None for p in resnet.parameters())

    squares = {p: torch.zeros_like(p) for p in resnet.parameters()}
    set_train_mode(resnet, freeze_norm_stats=True)
    for i in range(6):
        resnet.zero_grad(set_to_none=True)
        task.loss(resnet(source.preprocess(torch.from_numpy(images[i : i + 1]), SIZE)),
                  torch.from_numpy(labels[i : i + 1])).backward()
        for p in resnet.parameters():
            squares[p] += p.grad ** 2
    resnet.eval()
    for p in resnet.parameters():
        p.grad = squares[p] / 6
    expected = [method.criterion(resnet)(g) for g in _tp_groups(resnet)]
    resnet.zero_grad(set_to_none=True)
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_uniform_thins_every_layer_alike_and_keeps_the_first_channels(resnet: TaskModel) -> None:
    pruned = prune_channels(resnet, create_method("uniform").importance(resnet, _context(resnet)), 0.5, SIZE,
                            policy="uniform")
    before, after = dict(resnet.named_modules()), dict(pruned.named_modules())
    convs = [n for n, m in before.items() if isinstance(m, nn.Conv2d)]
    assert all(after[n].out_channels == before[n].out_channels // 2 for n in convs)
    stem = convs[0]  # its input is the image: its kept filters are the first half, weights as they were
    torch.testing.assert_close(after[stem].weight, before[stem].weight[: before[stem].out_channels // 2])


def test_scratch_is_the_architecture_of_another_method_with_fresh_weights(resnet: TaskModel) -> None:
    with pytest.raises(ConfigError, match="parameter of must name another registered method"):
        create_method("scratch", of="scratch")
    assert create_method("scratch", of="etl").starts_from == "source"  # its start's cost is the architect's
    assert create_method("scratch").starts_from == create_method("etl-transfer").starts_from == "transfer"
    ctx = _context(resnet)
    of = create_method("magnitude").prune(ctx, Budget(4.0)).model
    outcomes = [create_method("scratch", of="magnitude").prune(ctx, Budget(4.0)) for _ in range(2)]
    a, b = (o.model.state_dict() for o in outcomes)
    assert outcomes[0].fields["architecture_of"] == "magnitude"
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in of.state_dict().items()}
    weights = [k for k in a if k.endswith("conv1.weight")]
    assert weights and all(torch.equal(a[k], b[k]) for k in a)  # seeded
    assert not any(torch.equal(a[k], of.state_dict()[k]) for k in weights)  # drawn afresh


def test_reinitialising_keeps_channel_pads_as_wiring() -> None:
    from etlbench.methods.controls import reinitialise

    model = build_task_model(create_backbone("dlib-resnet29"), create_task("gender"), np.zeros(4, np.int64))
    pads = {n: m.weight.clone() for n, m in model.named_modules() if isinstance(m, ChannelPad)}
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and not isinstance(m, ChannelPad))
    before = conv.weight.clone()
    reinitialise(model, seed=0)
    assert pads and all(torch.equal(m.weight, pads[n]) for n, m in model.named_modules() if n in pads)
    assert not torch.equal(conv.weight, before)


def test_global_selection_removes_exactly_the_ratio_and_spreads_ties() -> None:
    from etlbench.surgery import plan_pruning

    plan = plan_pruning([torch.ones(10), None, torch.ones(6)], 0.5, "global", 0.95)
    assert [len(p) for p in plan] == [5, 0, 3]  # 8 of 16 tied channels, in proportion to the groups' sizes
    plan = plan_pruning([torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0.5, 4.0])], 0.4, "global", 0.95)
    assert [p.tolist() for p in plan] == [[1], [0]]  # the 2 lowest of 5: 0.5, then 1.0


def test_every_built_in_method_takes_the_parameters_its_trials_fill_in() -> None:
    """A trial fills in every parameter at its default (full_parameters): each built-in must accept exactly those."""
    from etlbench.methods import full_parameters
    from etlbench.plugins import METHODS

    for name in METHODS:
        assert create_method(name, **full_parameters(name, {})).name == name
    assert "policy" not in full_parameters("uniform", {}) and set(full_parameters("scratch", {})) == {"of"}
