"""Benchmarks of etlbench.measure (skipped by default; run with ``pytest tests/benchmarks --benchmark-only``).

* Stability: the median latency of the same model, measured three times in a row, agrees within 5%
  (batch 1 and batch 32, 1 thread), on a ResNet-like stand-in that needs no weights.
* Throughput of the default source network, dlib-resnet29 at 112 px on every usable core (skipped when it
  cannot be built); the target is >= 120 images/s at batch 32 on 2 cores.

The observed figures are written to ``benchmark.extra_info`` (``--benchmark-json`` keeps them).
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from etlbench.measure import Latency, MeasureConfig, count_macs, machine_info, measure_latency

INPUT_SIZE = (112, 112)
STABILITY_TOLERANCE = 0.05
TARGET_IMAGES_PER_S_B32 = 120.0  # dlib-resnet29, 112 px, batch 32, on 2 cores


class BasicBlock(nn.Module):
    """A ResNet basic block (two 3x3 convs, 1x1 projection shortcut when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet_like() -> nn.Sequential:
    """A small ResNet (stem to 56 px, stages of 32-64-128-256 channels): about 195 MMACs at 112 px."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         BasicBlock(32, 32, 1), BasicBlock(32, 64, 2), BasicBlock(64, 128, 2), BasicBlock(128, 256, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 128)).eval()


def _load() -> float:
    """The 1-minute load average: above the usable cores, other processes compete for the CPU."""
    return os.getloadavg()[0]


def _spread(runs: list[Latency]) -> float:
    """(max - min) / min of the medians."""
    medians = [r.median_ms for r in runs]
    return (max(medians) - min(medians)) / min(medians)


@pytest.mark.parametrize("batch", [1, 32])
def test_latency_is_stable_over_three_measurements(benchmark, batch: int) -> None:
    model = resnet_like()
    load_before = _load()
    runs: list[Latency] = benchmark.pedantic(
        lambda: [measure_latency(model, INPUT_SIZE, batch=batch, cfg=MeasureConfig(threads=1)) for _ in range(3)],
        rounds=1, iterations=1)
    spread = _spread(runs)
    benchmark.extra_info.update(
        macs=count_macs(model, INPUT_SIZE), batch=batch, threads=1, input_size=list(INPUT_SIZE),
        repeats=runs[0].repeats, warmup=runs[0].warmup, medians_ms=[r.median_ms for r in runs],
        iqrs_ms=[r.iqr_ms for r in runs], spread=spread, load_avg_1m=[load_before, _load()], **machine_info())
    print(f"\nbatch {batch}: medians {[round(r.median_ms, 3) for r in runs]} ms, "
          f"IQRs {[round(r.iqr_ms, 3) for r in runs]} ms, spread {spread:.2%}, load {load_before:.2f} -> {_load():.2f}")
    assert spread <= STABILITY_TOLERANCE, (f"three medians {[r.median_ms for r in runs]} ms differ by {spread:.1%} "
                                           f"(load average {load_before:.2f} -> {_load():.2f})")


@pytest.fixture(scope="module")
def dlib_resnet29() -> nn.Module:
    try:
        from etlbench.backbones import create_backbone

        return create_backbone("dlib-resnet29").eval()
    except Exception as exc:  # not written yet, or its weights are missing
        pytest.skip(f"dlib-resnet29 is unavailable: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("batch", [1, 32])
def test_dlib_resnet29_throughput(benchmark, dlib_resnet29: nn.Module, batch: int) -> None:
    info = machine_info()
    threads = int(info["usable_cores"])
    load_before = _load()
    lat: Latency = benchmark.pedantic(
        lambda: measure_latency(dlib_resnet29, INPUT_SIZE, batch=batch, cfg=MeasureConfig(threads=threads)),
        rounds=1, iterations=1)
    benchmark.extra_info.update(
        images_per_s=lat.images_per_s, median_ms=lat.median_ms, iqr_ms=lat.iqr_ms, batch=batch, threads=threads,
        input_size=list(INPUT_SIZE), repeats=lat.repeats, warmup=lat.warmup,
        macs=count_macs(dlib_resnet29, INPUT_SIZE), load_avg_1m=[load_before, _load()], **info)
    print(f"\ndlib-resnet29, batch {batch}, {threads} threads: {lat.images_per_s:.1f} images/s "
          f"(median {lat.median_ms:.2f} ms, IQR {lat.iqr_ms:.2f} ms, load {load_before:.2f} -> {_load():.2f})")
    if batch == 32 and threads == 2:
        assert lat.images_per_s >= TARGET_IMAGES_PER_S_B32, (
            f"{lat.images_per_s:.1f} images/s at batch 32 on 2 cores, below the target of {TARGET_IMAGES_PER_S_B32} "
            f"(load average {load_before:.2f} -> {_load():.2f})")


def test_pruned_dlib_resnet29_is_faster(benchmark, dlib_resnet29: nn.Module) -> None:
    """dlib-resnet29 with 75% of its filters removed (uniformly, by L1 norm) runs faster than the whole network
    (batch 8, 1 thread); moved here from tests/test_pruning.py, whose unit tests time nothing."""
    import numpy as np

    from etlbench.methods import create_method
    from etlbench.surgery import prune_channels
    from etlbench.tasks import create_task
    from etlbench.train import build_task_model

    model = build_task_model(dlib_resnet29, create_task("gender"), np.zeros(4, np.int64)).eval()
    pruned = prune_channels(model, create_method("magnitude").channel_scores, 0.75, INPUT_SIZE, policy="uniform")
    load_before = _load()
    fast, slow = benchmark.pedantic(
        lambda: [measure_latency(m, INPUT_SIZE, batch=8, cfg=MeasureConfig(threads=1)) for m in (pruned, model)],
        rounds=1, iterations=1)
    benchmark.extra_info.update(pruned_ms=fast.median_ms, whole_ms=slow.median_ms,
                                speedup=slow.median_ms / fast.median_ms, load_avg_1m=[load_before, _load()],
                                **machine_info())
    print(f"\npruned 75%: {fast.median_ms:.2f} ms, whole: {slow.median_ms:.2f} ms at batch 8 "
          f"({slow.median_ms / fast.median_ms:.1f}x, load {load_before:.2f} -> {_load():.2f})")
    assert fast.median_ms < slow.median_ms
