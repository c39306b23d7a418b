"""Structural pruning: channels physically removed on every backbone, budgets met or reported infeasible,
pruned models saved and loaded again, and the plugin API (README example included)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from etlbench import measure
from etlbench.backbones import ChannelPad, SourceNetwork, create_backbone
from etlbench.backbones.mobilefacenet import build_mobilefacenet
from etlbench.backbones.vggface import build_vggface16
from etlbench.methods import ConfigError, PruneContext, create_method
from etlbench.methods.etl import ETL, ProbeReport
from etlbench.registry import METHODS
from etlbench.surgery import Budget, load_pruned, prune_channels, prune_to_budget, save_pruned
from etlbench.tasks import create_task
from etlbench.train import TaskModel, build_task_model

L1 = create_method("magnitude").channel_scores
README = Path(__file__).resolve().parents[1] / "README.md"


def _model(source: SourceNetwork, task: str = "gender") -> TaskModel:
    return build_task_model(source, create_task(task), np.zeros(4, np.int64)).eval()


BACKBONES = {
    "dlib-resnet29": (lambda: create_backbone("dlib-resnet29"), (112, 112)),
    "mobilefacenet": (build_mobilefacenet, (112, 96)),
    "vggface16": (build_vggface16, (64, 64)),
    "timm/resnet18": (lambda: create_backbone("timm/resnet18"), (64, 64)),
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_pruning_keeps_every_backbone_runnable(name: str) -> None:
    build, size = BACKBONES[name]
    model = _model(build())
    x = torch.randn(2, 3, *size)
    same_model = prune_channels(model, L1, 0.0, size).eval()
    with torch.inference_mode():
        before, same = model(x), same_model(x)
    torch.testing.assert_close(same, before)  # ratio zero changes nothing

    pruned = prune_channels(model, L1, 0.5, size, policy="uniform").eval()
    with torch.inference_mode():
        out = pruned(x)
    assert out.shape == before.shape and torch.isfinite(out).all()
    assert pruned.head.fc.out_features == model.head.fc.out_features  # the head's outputs are never pruned
    assert measure.count_params(pruned) < 0.5 * measure.count_params(model)

    buffer = io.BytesIO()
    save_pruned(pruned, buffer)
    assert buffer.getbuffer().nbytes < 0.5 * measure.size_bytes(model)  # the saved file really shrinks
    buffer.seek(0)
    reloaded = load_pruned(_model(build()), buffer).eval()
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(x), out)


def test_pruned_dlib_is_faster_and_keeps_valid_channel_pads() -> None:
    model = _model(create_backbone("dlib-resnet29"))
    pruned = prune_channels(model, L1, 0.75, (112, 112), policy="uniform")
    pads = [m for m in pruned.modules() if isinstance(m, ChannelPad)]
    assert pads and all(not p.weight.requires_grad for p in pads)
    for pad in pads:  # still a selection: each output copies at most one input channel
        w = pad.weight[:, :, 0, 0]
        assert ((w == 0) | (w == 1)).all() and (w.sum(1) <= 1).all() and (w.sum(0) <= 1).all()
    assert measure.count_macs(pruned, (112, 112)) < 0.2 * measure.count_macs(model, (112, 112))
    fast = measure.measure_latency(pruned, (112, 112), batch=8, threads=1, warmup=2, repeats=5)
    slow = measure.measure_latency(model, (112, 112), batch=8, threads=1, warmup=2, repeats=5)
    assert fast.median_ms < slow.median_ms


@pytest.mark.parametrize(("policy", "compressions"), [("global", (2, 4, 8, 16, 32)), ("uniform", (4, 32))])
def test_budgets_land_within_ten_percent(policy: str, compressions: tuple[int, ...]) -> None:
    model = _model(create_backbone("dlib-resnet29"))
    base = measure.count_params(model)
    for compression in compressions:
        out = prune_to_budget(model, L1, Budget(compression), base, (112, 112), policy=policy)
        assert out.status == "ok", out.reason
        assert abs(base / out.params / compression - 1) <= 0.10
        assert out.params == measure.count_params(out.model)


def test_unreachable_budget_is_infeasible_with_a_reason() -> None:
    model = _model(create_backbone("dlib-resnet29"))
    out = prune_to_budget(model, L1, Budget(5000), measure.count_params(model), (112, 112))
    assert out.status == "infeasible" and out.model is None and "above the target" in out.reason
    with pytest.raises(ValueError, match="at least 1"):
        Budget(0.5)
    with pytest.raises(ValueError, match="'params' or 'macs'"):
        Budget(4, of="flops")  # type: ignore[arg-type]


def test_a_macs_budget_is_met_in_macs() -> None:
    model = _model(create_backbone("dlib-resnet29"))
    base = measure.count_macs(model, (112, 112))
    out = prune_to_budget(model, L1, Budget(4, of="macs"), base, (112, 112))
    assert out.status == "ok" and abs(base / out.macs / 4 - 1) <= 0.10


def test_methods_are_registered_and_check_their_parameters() -> None:
    assert {"etl", "magnitude", "taylor", "random"} <= set(METHODS.names())
    with pytest.raises(ConfigError, match=r"does not take parameter\(s\) \['epsilon'\]"):
        create_method("magnitude", epsilon=0.1)
    with pytest.raises(ConfigError, match="policy must be"):
        create_method("random", policy="sideways")
    assert create_method("etl", epsilon=0.05).epsilon == 0.05


def test_random_scores_are_seeded() -> None:
    layer = nn.Conv2d(3, 16, 3)
    a, b = create_method("random"), create_method("random")
    ctx = PruneContext(None, None, (8, 8), 7, 0, 0, lambda: None)  # type: ignore[arg-type]
    a.prepare(None, ctx)  # type: ignore[arg-type]
    b.prepare(None, ctx)  # type: ignore[arg-type]
    torch.testing.assert_close(a.channel_scores("x", layer), b.channel_scores("x", layer))
    assert not torch.equal(a.channel_scores("x", layer), a.channel_scores("y", layer))


def test_epsilon_rule_picks_the_shallowest_good_layer() -> None:
    report = ProbeReport({"a": 0.60, "b": 0.795, "c": 0.80, "d": 0.78}, {}, 1.0, 0.0, 100)
    assert ETL(epsilon=0.01).epsilon_cut(report, higher_is_better=True) == "b"
    assert ETL(epsilon=0.0).epsilon_cut(report, higher_is_better=True) == "c"
    errors = ProbeReport({"a": 20.0, "b": 12.1, "c": 12.0}, {}, 1.0, 0.0, 100)
    assert ETL(epsilon=0.01).epsilon_cut(errors, higher_is_better=False) == "b"


def test_readme_add_your_own_method_runs() -> None:
    """The README's example registers a working criterion in about ten lines."""
    block = re.search(r"## Add your own pruning method.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no 'Add your own pruning method' example"
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)  # the project's own README, not user input
    method = create_method("l2-norm")
    model = _model(create_backbone("dlib-resnet29"))
    base = measure.count_params(model)
    out = prune_to_budget(model, method.channel_scores, Budget(4), base, (112, 112))
    assert out.status == "ok" and abs(base / out.params / 4 - 1) <= 0.10
