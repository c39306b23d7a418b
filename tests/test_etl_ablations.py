"""ETL's ablations: the same probes and cut as ETL, and only the ingredient each names changed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from etlbench import measure
from etlbench.backbones import create_backbone
from etlbench.methods import PruneContext, create_method
from etlbench.surgery import Budget
from etlbench.tasks import create_task
from etlbench.train import TaskModel, build_task_model

SIZE = (64, 64)


@pytest.fixture(scope="module")
def setting() -> tuple[PruneContext, TaskModel]:
    torch.manual_seed(0)
    source, task = create_backbone("timm/resnet18"), create_task("gender")
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (120, 48, 48, 3), dtype=np.uint8), rng.integers(0, 2, 120)
    transfer = build_task_model(source, task, labels).eval()
    with torch.no_grad():  # a transfer-learned trunk: other weights than the source's
        for p in transfer.trunk.parameters():
            p.mul_(1.5).add_(0.01)
    full = build_task_model(source, task, labels)
    ctx = PruneContext(SimpleNamespace(images={"train": images}, targets={"train": labels}, task=task), source,
                       SIZE, 0, measure.count_params(full), measure.count_macs(full, SIZE),
                       transfer_model=lambda: transfer, setting_key="ablations")
    return ctx, transfer


def _stem(model: nn.Module) -> torch.Tensor:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).weight


def _kept_rows(pruned: torch.Tensor, full: torch.Tensor) -> list[int]:
    """Which filters of ``full`` the pruned stem kept (each pruned filter is one of them, unchanged)."""
    return [int(torch.nonzero((full == row).flatten(1).all(1))[0]) for row in pruned]


def test_the_ablations_share_etls_cut_and_change_only_their_ingredient(setting: tuple) -> None:
    ctx, transfer = setting
    budget = Budget(32.0)  # beyond what the cut alone gives: the filters after the cut are pruned too
    outcomes = {m: create_method(m, probe_samples=60).prune(ctx, budget)
                for m in ("etl", "etl-cut-uniform", "etl-cut-taylor", "etl-transfer")}
    assert all(o.status == "ok" for o in outcomes.values()), {m: o.reason for m, o in outcomes.items()}
    cut = outcomes["etl"].fields["cut_layer"]
    assert outcomes["etl-cut-uniform"].fields["cut_layer"] == outcomes["etl-cut-taylor"].fields["cut_layer"] == cut
    source_stem = _stem(ctx.source.blocks)
    kept = {m: _kept_rows(_stem(outcomes[m].model), source_stem) for m in ("etl", "etl-cut-uniform", "etl-cut-taylor")}
    assert 0 < len(kept["etl-cut-uniform"]) < len(source_stem)
    assert kept["etl-cut-uniform"] == list(range(len(kept["etl-cut-uniform"])))  # the first channels, no criterion
    widths = {m: [c.out_channels for c in outcomes[m].model.modules() if isinstance(c, nn.Conv2d)] for m in outcomes}
    assert widths["etl-cut-taylor"] != widths["etl"]  # another criterion after the same cut
    transfer_stem = _stem(transfer.trunk)
    assert _kept_rows(_stem(outcomes["etl-transfer"].model), transfer_stem)  # cut from the transfer-learned trunk
    with pytest.raises(IndexError):
        _kept_rows(_stem(outcomes["etl-transfer"].model), source_stem)
