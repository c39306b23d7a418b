"""HRank and group Fisher on a tiny network where the expected ranking is known by construction."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from etlbench.methods import PruneContext, create_method
from etlbench.tasks import TaskHead, create_task
from etlbench.train import TaskModel

SIZE = (16, 16)


def _context(images: np.ndarray, targets: np.ndarray, task: str) -> PruneContext:
    source = SimpleNamespace(preprocess=lambda x, size: x.permute(0, 3, 1, 2).float() / 255)
    data = SimpleNamespace(images={"train": images}, targets={"train": targets}, task=create_task(task))
    return PruneContext(data, source, SIZE, 0, 0, 0, transfer_model=lambda: None, setting_key="t")  # type: ignore[arg-type]


def test_hrank_ranks_filters_by_the_rank_of_their_maps() -> None:
    """Input channel 0 is full-rank noise, channel 1 a rank-1 outer product; 1x1 filters copy nothing (rank 0),
    channel 1 (rank 1) and channel 0 (rank 16): HRank must order them 0 < 1 < 2."""
    rng = np.random.default_rng(0)
    n = 40
    images = np.zeros((n, *SIZE, 3), np.uint8)
    images[..., 0] = rng.integers(0, 255, (n, *SIZE))
    images[..., 1] = (np.outer(np.arange(16), np.arange(16)) % 251)[None]
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[1, 1] = 1.0
        conv.weight[2, 0] = 1.0
    model = TaskModel(nn.Sequential(conv), TaskHead(3, 2))
    scores = create_method("hrank", batches=2).importance(model, _context(images, np.zeros(n, np.int64), "gender"))
    ranks = scores("trunk.0", conv)
    torch.testing.assert_close(ranks, torch.tensor([0.0, 1.0, 16.0]))


def test_fisher_ranks_channels_by_how_much_the_loss_reads_them() -> None:
    """Three identical feature maps read by the head with weights 0, 1 and 2: a mask on channel c changes the loss
    in proportion to its weight, so the Fisher scores are 0 < s1 < s2 with s2 = 4 s1."""
    rng = np.random.default_rng(0)
    n = 64
    images = rng.integers(0, 255, (n, *SIZE, 3), dtype=np.uint8)
    conv = nn.Conv2d(3, 3, 1, bias=False)
    head = TaskHead(3, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0] = 1.0
        head.fc.weight.copy_(torch.tensor([[0.0, 1.0, 2.0]]))
        head.fc.bias.zero_()
    model = TaskModel(nn.Sequential(conv), head)
    ages = rng.uniform(20, 60, n).astype(np.float32)
    scores = create_method("fisher", batches=2).importance(model, _context(images, ages, "age"))("trunk.0", conv)
    assert scores[0] == 0 and 0 < scores[1] < scores[2]
    torch.testing.assert_close(scores[2], 4 * scores[1])
    assert all(p.grad is None for p in model.parameters())
