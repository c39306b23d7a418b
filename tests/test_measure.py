"""Unit tests of etlbench.measure: counts are checked against hand counts; no timing is asserted."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import types
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from torch import nn

import etlbench.measure as measure_module
from etlbench.measure import (
    Latency,
    MeasureConfig,
    count_macs,
    count_params,
    flanked,
    machine_info,
    measure,
    measure_latency,
    size_bytes,
    steady_allocator,
)
from etlbench.model_io import save_pruned


def small_net(width: int = 8) -> nn.Sequential:
    """Conv(3->w, 3x3, bias) + BN(w) + ReLU + global pool + Linear(w->4)."""
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 4))


def test_params_equal_hand_count() -> None:
    # conv 3*8*3*3 + 8 bias, BN 8 weight + 8 bias (running stats are buffers), linear 8*4 + 4
    assert count_params(small_net(8)) == (3 * 8 * 9 + 8) + (8 + 8) + (8 * 4 + 4)


def test_shared_tensors_counted_once() -> None:
    shared = nn.Linear(4, 4)
    net = nn.Sequential(shared, nn.ReLU(), shared)  # the same module twice
    assert count_params(net) == 4 * 4 + 4
    tied = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    tied[1].weight = tied[0].weight  # weight tying
    assert count_params(tied) == 4 * 4


def test_channel_pad_weights_excluded() -> None:
    from etlbench.backbones.base import ChannelPad

    conv = nn.Conv2d(3, 4, 3, bias=False)
    padded = nn.Sequential(conv, ChannelPad(4, 16))
    assert count_params(padded) == count_params(conv) == 3 * 4 * 9
    assert size_bytes(padded) > size_bytes(conv)  # stored on disk all the same
    # ...and executed: its 1x1 convolution's MACs are counted
    assert count_macs(padded, (10, 10)) == count_macs(conv, (10, 10)) + 4 * 16 * 8 * 8


def test_smaller_model_is_smaller_everywhere() -> None:
    big, small = small_net(16), small_net(8)
    assert count_params(small) < count_params(big)
    assert size_bytes(small) < size_bytes(big)
    assert count_macs(small, (32, 32)) < count_macs(big, (32, 32))


def test_size_bytes_is_the_saved_file(tmp_path) -> None:
    net = small_net(8)
    # torch.save's zip records are named after the file stem ("archive" for a buffer), hence this name;
    # other names change the size by a few bytes per tensor
    path = tmp_path / "archive.pt"
    save_pruned(net, str(path))  # the format the project saves (pruned) models in, without metadata
    assert size_bytes(net) == path.stat().st_size
    save_pruned(net, str(path), meta={"row": "x" * 4096})
    assert path.stat().st_size > size_bytes(net)  # metadata is not the model's size


@pytest.mark.parametrize(("cin", "cout", "k", "stride", "padding", "groups", "hw"), [
    (3, 16, 3, 2, 1, 1, (32, 40)),
    (8, 8, 3, 1, 0, 4, (17, 9)),
    (4, 12, 1, 1, 0, 1, (5, 5)),
])
def test_conv_macs_equal_formula(cin: int, cout: int, k: int, stride: int, padding: int, groups: int,
                                 hw: tuple[int, int]) -> None:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups)
    h_out, w_out = ((s + 2 * padding - k) // stride + 1 for s in hw)
    assert count_macs(conv, hw, channels=cin) == cout * (cin // groups) * k * k * h_out * w_out


def test_macs_count_convolutions_and_linears_only() -> None:
    # BN, ReLU, pooling and bias additions are not multiply-accumulates
    assert count_macs(small_net(8), (6, 6)) == 8 * 3 * 9 * 6 * 6 + 8 * 4


def test_macs_agree_with_torch_pruning_on_a_plain_conv_stack() -> None:
    tp = pytest.importorskip("torch_pruning")
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.Conv2d(8, 16, 3, stride=2, bias=False),
                        nn.Conv2d(16, 4, 1, bias=False))
    tp_macs, _ = tp.utils.count_ops_and_params(net, torch.zeros(1, 3, 24, 24))
    assert count_macs(net, (24, 24)) == int(tp_macs)


def test_count_macs_leaves_the_model_untouched() -> None:
    net = small_net(8).train()
    net[1].eval()  # a mixed state, e.g. frozen BatchNorm during fine-tuning
    stats = net[1].running_mean.clone()
    count_macs(net, (16, 16))
    assert net.training and not net[1].training and net[0].training
    assert torch.equal(net[1].running_mean, stats)


def test_measure_latency_restores_threads_and_modes() -> None:
    net = small_net(8).train()
    net[1].eval()
    stats = net[1].running_var.clone()
    previous = torch.get_num_threads()
    other = 2 if previous == 1 else 1
    try:
        torch.set_num_threads(other)
        cfg = MeasureConfig(threads=1 if other == 2 else 2, warmup=1, repeats=5, max_seconds=0.5)
        lat = measure_latency(net, (16, 16), batch=2, cfg=cfg)
        assert torch.get_num_threads() == other
    finally:
        torch.set_num_threads(previous)
    assert net.training and not net[1].training and net[0].training and net[5].training
    assert torch.equal(net[1].running_var, stats)
    assert lat.threads == (1 if other == 2 else 2)


def test_latency_fields_are_sane() -> None:
    cfg = MeasureConfig(warmup=2, repeats=7, warmup_seconds=0.0, max_seconds=0.5)
    lat = measure_latency(small_net(8), (16, 20), batch=3, cfg=cfg)
    assert isinstance(lat, Latency)
    assert lat.median_ms > 0 and lat.iqr_ms >= 0
    assert (lat.batch, lat.threads, lat.input_size) == (3, 1, (16, 20))
    assert lat.repeats >= 7 and lat.repeats % 7 == 0 and lat.warmup >= 2  # more rounds while the median is unsure
    assert lat.per_image_ms == pytest.approx(lat.median_ms / 3)
    assert lat.images_per_s == pytest.approx(3000.0 / lat.median_ms)


class ScriptedNet(nn.Module):
    """A network whose every call takes the next of ``seconds`` on a fake clock (then the last one, forever)."""

    def __init__(self, seconds: Iterable[float]):
        super().__init__()
        self.now = 0.0
        self.seconds = itertools.chain(seconds, itertools.repeat(None))
        self.last = 0.0
        self.calls = 0

    def clock(self) -> float:
        return self.now

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = next(self.seconds)
        self.last = self.last if step is None else step
        self.now += self.last
        self.calls += 1
        return x


def scripted_latency(monkeypatch: pytest.MonkeyPatch, seconds: Iterable[float], warmup: int = 2, **kwargs) -> Latency:
    """measure_latency on the fake clock of a :class:`ScriptedNet` (``warmup`` calls of 1 s come first)."""
    net = ScriptedNet(itertools.chain([1.0] * warmup, seconds))
    monkeypatch.setattr(measure_module, "time", types.SimpleNamespace(perf_counter=net.clock))
    return measure_latency(net, (4, 4), cfg=MeasureConfig(warmup=warmup, warmup_seconds=0.0, **kwargs))


def test_more_repeats_while_the_median_is_uncertain(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stopping rule on a fake clock, so that the medians are known and no machine's speed matters."""
    from etlbench.measure import _median_ci_width

    assert _median_ci_width([1.0] * 30) == 0.0
    assert _median_ci_width([1.0, 2.0] * 15) == pytest.approx(1 / 1.5)  # from 1 to 2 around a median of 1.5
    steady = scripted_latency(monkeypatch, [0.001], repeats=5)
    assert steady.repeats == 5 and steady.median_ms == pytest.approx(1.0) and steady.iqr_ms == pytest.approx(0.0)
    # alternating 1 and 2 ms: the median stays uncertain, so rounds of 5 go on until max_seconds of timed calls;
    # the rounds take 1+2+1+2+1 = 7 and 2+1+2+1+2 = 8 ms in turn: 45 ms after 6 rounds, 52 ms (>= 50) after 7
    noisy = scripted_latency(monkeypatch, [0.001, 0.002] * 100, repeats=5, max_seconds=0.05)
    assert noisy.repeats == 35 and noisy.median_ms == pytest.approx(1.0)  # 18 calls of 1 ms, 17 of 2 ms
    assert noisy.iqr_ms == pytest.approx(1.0)
    loose = scripted_latency(monkeypatch, [0.001, 0.002] * 100, repeats=5, max_seconds=0.05, target_ci=10.0)
    assert loose.repeats == 5  # a loose target stops after the first round
    settles = scripted_latency(monkeypatch, [0.001, 0.002] * 5 + [0.001] * 1000, repeats=10, max_seconds=10.0)
    assert 10 < settles.repeats < 1000 and settles.median_ms == pytest.approx(1.0)  # stops once it is sure
    assert settles.repeats % 10 == 0


def test_warmup_takes_calls_and_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    lat = scripted_latency(monkeypatch, [0.001], warmup=3, repeats=5)
    assert lat.warmup == 3  # three calls of 1 s: more than warmup_seconds=0
    net = ScriptedNet([0.25])
    monkeypatch.setattr(measure_module, "time", types.SimpleNamespace(perf_counter=net.clock))
    lat = measure_latency(net, (4, 4), cfg=MeasureConfig(warmup=1, warmup_seconds=1.0, repeats=5))
    assert lat.warmup == 4 and net.calls == 4 + 5  # 1 s of 0.25 s calls, then one round of 5


def test_measure_latency_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        MeasureConfig(repeats=1)
    with pytest.raises(ValueError):
        measure_latency(small_net(8), (16, 16), batch=0)


def test_measure_returns_every_key() -> None:
    net = small_net(8)
    out = measure(net, (16, 16), MeasureConfig(batches=(1, 4), repeats=3, warmup=1, max_seconds=0.5))
    assert out["params"] == count_params(net) and out["size_bytes"] == size_bytes(net)
    assert out["macs"] == count_macs(net, (16, 16))
    for key in ("latency_ms", "latency_iqr_ms", "latency_b4_ms", "latency_b4_iqr_ms", "latency_b4_per_image_ms"):
        assert isinstance(out[key], float) and out[key] >= 0
    assert out["latency_b4_per_image_ms"] == pytest.approx(out["latency_b4_ms"] / 4)
    assert (out["threads"], out["repeats"], out["warmup"], out["input_h"], out["input_w"]) == (1, 3, 1, 16, 16)
    assert out["torch"] == torch.__version__ and isinstance(out["cpu"], str) and out["cpu"]
    assert isinstance(out["load_avg_1m"], float)
    assert out["allocator"] in {"glibc-keep-1GiB", "default"}


def test_flanked_averages_the_two_timings_and_reports_how_far_they_moved() -> None:
    """The machine slowed from 10 to 12 ms at batch 1 while a model was timed: the baseline is their mean and
    the drift is the move relative to it; batch 4 held still; counts and conditions come from the later timing."""
    before = {"params": 10, "load_avg_1m": 0.1, "latency_ms": 10.0, "latency_iqr_ms": 1.0, "latency_b4_ms": 40.0,
              "latency_b4_iqr_ms": 2.0, "latency_b4_per_image_ms": 10.0}
    after = {**before, "load_avg_1m": 0.3, "latency_ms": 12.0, "latency_iqr_ms": 3.0, "latency_b4_per_image_ms": 12.0}
    out = flanked(before, after)
    assert (out["latency_ms"], out["latency_iqr_ms"], out["latency_b4_ms"]) == (11.0, 2.0, 40.0)
    assert out["latency_b4_per_image_ms"] == 11.0
    assert (out["latency_drift"], out["latency_b4_drift"]) == (pytest.approx(2 / 11), 0.0)
    assert (out["params"], out["load_avg_1m"]) == (10, 0.3) and "latency_iqr_drift" not in out
    assert flanked(before, before)["latency_drift"] == 0.0


def test_machine_info() -> None:
    info = machine_info()
    assert set(info) == {"cpu", "logical_cores", "usable_cores", "torch", "torch_threads", "allocator"}
    assert 1 <= int(info["usable_cores"]) <= int(info["logical_cores"])
    assert info["torch_threads"] == torch.get_num_threads()


def test_steady_allocator_is_applied_once_and_reported() -> None:
    import platform

    assert steady_allocator() is steady_allocator()
    if platform.libc_ver()[0] == "glibc":
        assert steady_allocator() == "glibc-keep-1GiB"


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="CPU accounting from /proc/stat (Linux)")
def test_busy_cores_sees_a_spinning_process_and_waiting_gives_up() -> None:
    from etlbench.measure import busy_cores, wait_until_idle

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert busy_cores() >= 0.8  # the spinner alone keeps one core busy
        waited, busy = wait_until_idle(threshold=0.0, max_wait=2.0)  # never idle enough: gives up, says how busy
        assert waited >= 2.0 and busy >= 0.8
    finally:
        spinner.kill()
        spinner.wait()
    waited, busy = wait_until_idle(threshold=float(os.cpu_count() or 1) + 1, max_wait=10.0)  # any load is idle
    assert waited < 10.0 and busy >= 0.0  # idle at the first sample: no waiting to the limit
