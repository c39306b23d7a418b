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
from etlbench.methods import ConfigError, PruneContext, PruningMethod, create_method
from etlbench.methods.etl import ETL, ProbeReport
from etlbench.model_io import load_pruned, save_pruned
from etlbench.registry import METHODS
from etlbench.surgery import Budget, PruneOutcome, prune_channels, prune_to_budget
from etlbench.tasks import create_task
from etlbench.train import TaskModel, build_task_model

L1 = create_method("magnitude").channel_scores
README = Path(__file__).resolve().parents[1] / "README.md"


def _model(source: SourceNetwork, task: str = "gender") -> TaskModel:
    return build_task_model(source, create_task(task), np.zeros(4, np.int64)).eval()


def _context(model: TaskModel, seed: int = 0, size: tuple[int, int] = (112, 112)) -> PruneContext:
    """A context for methods that start from the transfer model and read no data (magnitude, random)."""
    return PruneContext(None, None, size, seed, measure.count_params(model),  # type: ignore[arg-type]
                        measure.count_macs(model, size), transfer_model=lambda: model, setting_key=f"test-{seed}")


def _same_model(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


BACKBONES = {
    "dlib-resnet29": (lambda: create_backbone("dlib-resnet29"), (112, 112)),
    "mobilefacenet": (build_mobilefacenet, (112, 96)),
    "vggface16": (build_vggface16, (64, 64)),
    "timm/resnet18": (lambda: create_backbone("timm/resnet18"), (64, 64)),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in ("vggface16", "dlib-resnet29")
                                  else n for n in sorted(BACKBONES)])
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


def test_pruned_dlib_does_less_work_and_keeps_valid_channel_pads() -> None:
    """Structure and MACs only: that the pruned network is also faster is timed in tests/benchmarks."""
    model = _model(create_backbone("dlib-resnet29"))
    pruned = prune_channels(model, L1, 0.75, (112, 112), policy="uniform")
    pads = [m for m in pruned.modules() if isinstance(m, ChannelPad)]
    assert pads and all(not p.weight.requires_grad for p in pads)
    for pad in pads:  # still a selection: each output copies at most one input channel
        w = pad.weight[:, :, 0, 0]
        assert ((w == 0) | (w == 1)).all() and (w.sum(1) <= 1).all() and (w.sum(0) <= 1).all()
    assert measure.count_macs(pruned, (112, 112)) < 0.2 * measure.count_macs(model, (112, 112))


@pytest.mark.parametrize(("policy", "compressions"), [
    pytest.param("global", (2, 4, 8, 16, 32), marks=pytest.mark.slow), ("uniform", (4, 32))])
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
    with pytest.raises(ConfigError, match=r"method 'magnitude' does not take parameter 'epsilon'; it takes: \[") as err:
        create_method("magnitude", epsilon=0.1)
    assert err.value.key == "epsilon"
    with pytest.raises(ConfigError, match="policy must be") as err:
        create_method("random", policy="sideways")
    assert err.value.key == "policy"
    with pytest.raises(ConfigError, match="epsilon must be a finite number, got 'abc'") as err:
        create_method("etl", epsilon="abc")
    assert err.value.key == "epsilon"
    with pytest.raises(ConfigError, match="batches must be an integer"):
        create_method("taylor", batches=2.5)
    with pytest.raises(ConfigError, match="batches must be at least 1"):
        create_method("taylor", batches=0)
    assert create_method("etl", epsilon=0.05).epsilon == 0.05
    assert create_method("etl", epsilon=1).epsilon == 1  # an integer is a number
    assert ETL.chooses_operating_point and not METHODS.get("magnitude").chooses_operating_point
    assert (ETL.starts_from, METHODS.get("taylor").starts_from) == ("source", "transfer")


def test_random_scores_are_seeded() -> None:
    layer = nn.Conv2d(3, 16, 3)
    method = create_method("random")
    ctx7 = PruneContext(None, None, (8, 8), 7, 0, 0, lambda: None, "s")  # type: ignore[arg-type]
    ctx8 = PruneContext(None, None, (8, 8), 8, 0, 0, lambda: None, "s")  # type: ignore[arg-type]
    a, b = method.importance(None, ctx7), create_method("random").importance(None, ctx7)  # type: ignore[arg-type]
    torch.testing.assert_close(a("x", layer), b("x", layer))  # the same seed and layer: the same scores
    assert not torch.equal(a("x", layer), a("y", layer))  # another layer
    assert not torch.equal(a("x", layer), method.importance(None, ctx8)("x", layer))  # another seed


def test_prune_keeps_no_state_between_contexts() -> None:
    """A method is configured once and may prune many settings: nothing of one call leaks into the next."""
    model = _model(create_backbone("dlib-resnet29"))
    method = create_method("random")
    before = dict(vars(method))
    outcomes = [method.prune(_context(model, seed), Budget(4)) for seed in (0, 1, 0)]
    assert vars(method) == before
    assert all(o.status == "ok" for o in outcomes)
    assert _same_model(outcomes[0].model, outcomes[2].model)  # seed 0 again: the first result again
    assert not _same_model(outcomes[0].model, outcomes[1].model)
    assert _same_model(model, _model(create_backbone("dlib-resnet29")))  # the start model is not pruned in place
    with pytest.raises(ConfigError, match="cannot choose its own operating point"):
        method.prune(_context(model), None)


def test_register_method_names_the_class(monkeypatch: pytest.MonkeyPatch) -> None:
    from etlbench.methods import register_method

    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # forget it afterwards

    @register_method("x")
    class Mine(PruningMethod):
        def channel_scores(self, name: str, layer: nn.Module) -> torch.Tensor:
            return layer.weight.detach().abs().flatten(1).sum(1)

    assert Mine.name == "x" and create_method("x").name == "x" and METHODS.get("x") is Mine
    with pytest.raises(ConfigError, match="method 'x': parameter policy must be"):
        create_method("x", policy="sideways")
    assert PruningMethod.name == ""  # registering a subclass does not name the base


def test_epsilon_rule_picks_the_shallowest_good_layer() -> None:
    report = ProbeReport({"a": 0.60, "b": 0.795, "c": 0.80, "d": 0.78}, {}, 1.0, 0.0, 100)
    assert ETL(epsilon=0.01).epsilon_cut(report, higher_is_better=True) == "b"
    assert ETL(epsilon=0.0).epsilon_cut(report, higher_is_better=True) == "c"
    errors = ProbeReport({"a": 20.0, "b": 12.1, "c": 12.0}, {}, 1.0, 0.0, 100)
    assert ETL(epsilon=0.01).epsilon_cut(errors, higher_is_better=False) == "b"


def test_readme_add_your_own_method_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's example registers a working criterion in about ten lines."""
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # forget it afterwards
    block = re.search(r"## Add your own pruning method.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no 'Add your own pruning method' example"
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)  # the project's own README, not user input
    method = create_method("l2-norm")
    assert method.name == "l2-norm" and isinstance(method, namespace["L2Norm"])
    model = _model(create_backbone("dlib-resnet29"))
    base = measure.count_params(model)
    out = method.prune(_context(model), Budget(4))  # the shared selection, from the transfer model
    assert isinstance(out, PruneOutcome) and out.status == "ok" and abs(base / out.params / 4 - 1) <= 0.10
    assert out.params == measure.count_params(out.model)
