"""HRank, Group Fisher and OBD-C: each against a computation written out independently on a network where the expected
ranking is known, and Fisher's cost against the sizes measured after removing a channel."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from etlbench import measure
from etlbench.backbones import create_backbone
from etlbench.methods import PruneContext, create_method
from etlbench.methods.feature_maps import channel_cost
from etlbench.surgery import _groups, apply_plan, group_importance
from etlbench.tasks import create_task
from etlbench.train import TaskModel, build_task_model

SIZE = (16, 16)


class Block(nn.Module):
    """conv -> relu -> conv, plus the skip, then relu: the output channels of ``stem`` and ``conv2`` are coupled."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1, self.conv2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        m = masks or {}
        s = self.relu(self.stem(x))
        y = self.conv2(self.relu(self.conv1(s * m.get("conv1", 1))) * m.get("conv2", 1))
        return self.relu(y + s)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = Block()
        self.head = nn.Module()
        self.head.fc = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        features = self.trunk(x, masks)
        pooled = features.mean((2, 3))
        return self.head.fc(pooled * (masks or {}).get("fc", 1))


def _context(model: nn.Module, n: int = 8, seed: int = 0) -> PruneContext:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, *SIZE, 3), dtype=np.uint8)
    targets = rng.normal(0, 1, (n, 1)).astype(np.float32)
    source = SimpleNamespace(preprocess=lambda x, size: x.permute(0, 3, 1, 2).float() / 255)
    data = SimpleNamespace(images={"train": images}, targets={"train": targets}, task=create_task("age"))
    return PruneContext(data, source, SIZE, seed, measure.count_params(model), measure.count_macs(model, SIZE),  # type: ignore[arg-type]
                        transfer_model=lambda: model, setting_key="test")


def _stem_group(model: nn.Module, scores: list[torch.Tensor | None]) -> torch.Tensor:
    groups = _groups(model, SIZE)
    (i,) = [i for i, g in enumerate(groups) if any(item.dep.layer is model.trunk.stem for item in g)]
    return scores[i]


def test_hrank_ranks_the_maps_after_the_activation() -> None:
    """Stem channels made to give a random map (high rank), a constant map (rank 1), and a map that the ReLU zeroes
    (rank 0 after the activation, though of full rank before it)."""
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        stem, block = model.trunk.stem, model.trunk
        stem.weight.normal_()
        stem.bias.fill_(0.0)
        stem.weight[1].zero_(), stem.bias[1].fill_(1.0)  # constant: rank 1
        stem.bias[2].fill_(-1e3)  # negative everywhere: zero after the ReLU
        block.conv2.weight.zero_(), block.conv2.bias.zero_()  # the block's residual adds nothing: y + s = s
    ctx = _context(model)
    scores = _stem_group(model, group_importance(model, create_method("hrank", samples=8).importance(model, ctx), SIZE))
    assert scores[0] > scores[1] > scores[2] == 0
    assert scores[0] == scores[3]  # random maps of 16 x 16: full rank


def test_fisher_is_the_squared_gradient_of_one_mask_per_group_over_its_cost() -> None:
    """Group Fisher against masks written into the network, over two batches (32 and 8 images): the stem's channels
    are masked at both layers that read them (conv1 and the head, one mask), the per-sample gradients summed over
    both, then squared and summed over samples."""
    torch.manual_seed(0)
    model = Net().eval()
    ctx = _context(model, n=40)
    scores = _stem_group(model, group_importance(model, create_method("fisher", samples=40).importance(model, ctx),
                                                 SIZE))
    assert all(p.grad is None for p in model.parameters())
    per_sample, apart = [], []
    for x, y in ctx.training_batches(40):
        masks = {"conv1": torch.ones(len(x), 4, 1, 1, requires_grad=True),
                 "fc": torch.ones(len(x), 4, requires_grad=True)}
        (len(x) * ctx.data.task.loss(model(x, masks), y)).backward()
        per_sample.append(masks["conv1"].grad.flatten(1) + masks["fc"].grad)
        apart.append(masks["conv1"].grad.flatten(1).pow(2) + masks["fc"].grad.pow(2))
    assert len(per_sample) == 2
    cost = (3 * 9 + 1) + (4 * 9 + 1) + 4 * 9 + 1  # stem's and conv2's filters and biases, conv1's and fc's inputs
    torch.testing.assert_close(scores, (0.5 * torch.cat(per_sample).pow(2).sum(0) / cost).float())
    squared_apart = 0.5 * torch.cat(apart).sum(0) / cost
    assert not torch.allclose(scores, squared_apart.float())  # summed before squaring, as the paper's shared mask


@pytest.mark.parametrize("name", ["hrank", "fisher", "obdc"])
@pytest.mark.parametrize("backbone, size", [("dlib-resnet29", (112, 112)), ("mobilefacenet", (112, 96))])
def test_every_group_of_the_default_backbones_is_scored(name: str, backbone: str, size: tuple[int, int],
                                                        request: pytest.FixtureRequest,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No group left unscored (kept whole) by accident: maps of 1 x 1, or read only through a global pool."""
    if backbone == "mobilefacenet":
        monkeypatch.setenv("ETLBENCH_DATA", str(request.getfixturevalue("real_data_root")))
    source, task = create_backbone(backbone), create_task("gender")
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (8, 64, 64, 3), dtype=np.uint8), np.array([0, 1] * 4)
    model = build_task_model(source, task, labels).eval()
    ctx = PruneContext(SimpleNamespace(images={"train": images}, targets={"train": labels}, task=task), source,  # type: ignore[arg-type]
                       size, 0, 1, 1, transfer_model=lambda: model, setting_key="test")
    method = create_method(name, **{"batches" if name == "obdc" else "samples": 8})
    scores = group_importance(model, method.importance(model, ctx), size)
    assert all(s is not None and torch.isfinite(s).all() for s in scores), [s is None for s in scores]


@pytest.mark.parametrize("backbone, size", [("dlib-resnet29", (112, 112)), ("mobilefacenet", (112, 96))])
def test_fishers_cost_is_what_removing_a_channel_saves(backbone: str, size: tuple[int, int],
                                                      request: pytest.FixtureRequest,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """For every group: the parameters and MACs measured after removing one of its channels."""
    if backbone == "mobilefacenet":  # its checkpoint sits beside the data
        monkeypatch.setenv("ETLBENCH_DATA", str(request.getfixturevalue("real_data_root")))
    model = build_task_model(create_backbone(backbone), create_task("gender"), np.zeros(4, np.int64)).eval()
    areas: dict[nn.Module, int] = {}
    hooks = [m.register_forward_hook(lambda m, a, out: areas.__setitem__(m, out.shape[-1] * out.shape[-2]
                                                                         if out.dim() == 4 else 1))
             for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    model(torch.zeros(1, 3, *size))
    for hook in hooks:
        hook.remove()
    groups = _groups(model, size)
    params, macs = measure.count_params(model), measure.count_macs(model, size)
    empty = torch.zeros(0, dtype=torch.long)
    for i, group in enumerate(groups):
        smaller = apply_plan(model, [torch.tensor([0]) if j == i else empty for j in range(len(groups))], size)
        assert channel_cost(group, "params", areas) == params - measure.count_params(smaller), i
        assert channel_cost(group, "macs", areas) == macs - measure.count_macs(smaller, size), i


def test_obdc_is_w2_times_the_per_sample_fisher(monkeypatch: pytest.MonkeyPatch) -> None:
    """OBD-C through Torch-Pruning against its formula written out: the group mean of ``sum over a filter of
    w^2 * sum over samples of g^2`` (per-sample gradients of per-sample losses), normalised by its mean."""
    torch.manual_seed(0)
    model = Net().eval()
    ctx = _context(model, n=64)
    ours = _stem_group(model, group_importance(model, create_method("obdc", batches=2).importance(model, ctx), SIZE))
    assert all(p.grad is None for p in model.parameters())
    squares = {m: torch.zeros_like(m.weight) for m in (model.trunk.stem, model.trunk.conv2)}
    for x, y in ctx.training_batches(64, batch_size=1):
        model.zero_grad()
        ctx.data.task.loss(model(x), y).backward()
        for m in squares:
            squares[m] += m.weight.grad ** 2
    model.zero_grad(set_to_none=True)
    per_layer = [(m.weight.detach() ** 2 * squares[m]).flatten(1).sum(1) for m in squares]
    expected = torch.stack(per_layer).mean(0)
    torch.testing.assert_close(ours, expected / expected.mean(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["hrank", "fisher", "obdc"])
def test_data_criteria_are_seeded_and_leave_the_model_as_it_was(name: str) -> None:
    torch.manual_seed(0)
    model: TaskModel = Net().eval()  # type: ignore[assignment]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a, b = (group_importance(model, create_method(name, **{"batches" if name == "obdc" else "samples": 1})
                             .importance(model, _context(model, n=40)), SIZE) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True) if x is not None)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
