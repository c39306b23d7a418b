"""Honest measurement of a model: learned parameters, bytes on disk, MACs and CPU latency.

Definitions (every number is measured, never estimated from a formula of the architecture):

* **params** — elements of the learned parameters: each shared tensor once, without the fixed weights of
  :class:`~etlbench.backbones.base.ChannelPad` and without buffers (BatchNorm running statistics).
* **size_bytes** — length of the file the project saves a model to (:func:`etlbench.model_io.save_pruned`:
  the state dict with buffers and ChannelPad weights, plus each layer's channel counts), written to memory
  without metadata; the files under a run's ``models/`` add a few bytes of metadata (the trial id).
* **macs** — multiply-accumulates of one image, counted at the operator level by
  :class:`torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2) while the model runs: convolutions (of any
  module, subclass or functional call, ChannelPad included since it is executed), matrix products and
  attention. Bias additions, normalisation, activations, pooling and residual additions are not MACs and
  are not counted.
* **latency** — median and interquartile range of the wall-clock time (``time.perf_counter``) of single
  forward calls on the CPU under ``torch.inference_mode`` in eval mode, with a fixed thread count, after
  warm-up calls, on a fixed random input. On glibc the allocator is first told to keep freed memory
  (:func:`steady_allocator`), as the jemalloc/tcmalloc of a deployment would: otherwise every call of a
  large batch maps its activations afresh and pays page faults, which made batch-32 medians 22% slower and
  their spread between measurements twice as wide.
* **latency reduction** — against the unpruned baseline timed just before and just after the model in the same
  process (:func:`flanked`): on a shared VM the speed of the machine moves between processes and over minutes
  (the same baseline measured 19.5 ms in one pass and 33.2 ms in another), and a baseline timed once per run
  turned that into false speed-ups and slow-downs. ``latency_drift`` says how far it moved around each model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import io
import os
import platform
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from etlbench.checks import AT_LEAST_1, NON_NEGATIVE, POSITIVE, check_fields
from etlbench.errors import ConfigError

__all__ = [
    "Latency",
    "MeasureConfig",
    "count_macs",
    "count_params",
    "eval_mode",
    "flanked",
    "latency_medians",
    "machine_info",
    "measure",
    "measure_latency",
    "size_bytes",
    "steady_allocator",
]


def count_params(model: nn.Module) -> int:
    """Learned parameters: each shared tensor once, excluding the fixed weights of ``ChannelPad`` modules."""
    from etlbench.backbones.base import ChannelPad  # lazy: the backbones package may import this module

    fixed = {id(p) for m in model.modules() if isinstance(m, ChannelPad) for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) not in fixed)  # parameters() deduplicates


def size_bytes(model: nn.Module) -> int:
    """Bytes of the model as :func:`etlbench.model_io.save_pruned` writes it (no metadata), in memory."""
    from etlbench.model_io import save_pruned

    buffer = io.BytesIO()
    save_pruned(model, buffer)
    return buffer.getbuffer().nbytes


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own train/eval flag afterwards (mixed states too)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters of glibc's malloc.h
_KEEP_BYTES = 1 << 30


@cache
def steady_allocator() -> str:
    """Make glibc keep freed blocks of up to 1 GiB instead of unmapping them (process-wide, once).

    Returns the allocator condition that measurements record: ``glibc-keep-1GiB``, or ``default`` where the
    C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES) == 1
    except (OSError, AttributeError, TypeError):
        return "default"
    return "glibc-keep-1GiB" if ok else "default"


@contextmanager
def _num_threads(threads: int) -> Iterator[None]:
    """Set torch's intra-op thread count, restoring the previous one afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _example_input(model: nn.Module, batch: int, channels: int, input_size: tuple[int, int]) -> torch.Tensor:
    """A fixed (seeded) random N x C x H x W input with the model's floating dtype, on the CPU."""
    params = [p for p in model.parameters() if p.is_floating_point()]
    if any(p.device.type != "cpu" for p in params):
        raise ValueError("measurement runs on the CPU; move the model there first (model.cpu())")
    dtype = params[0].dtype if params else torch.float32
    h, w = input_size
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, channels, h, w, generator=generator).to(dtype)


def count_macs(model: nn.Module, input_size: tuple[int, int], channels: int = 3) -> int:
    """Multiply-accumulates of one ``channels`` x H x W image through ``model.forward`` (counted, in eval mode).

    The model's train/eval flags and state (e.g. BatchNorm running statistics) are left unchanged.
    """
    x = _example_input(model, 1, channels, input_size)
    with eval_mode(model), torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class Latency:
    """CPU latency of one forward call on a batch: median and interquartile range (Q3 - Q1) over ``repeats``."""

    median_ms: float
    iqr_ms: float
    batch: int
    threads: int
    input_size: tuple[int, int]
    repeats: int
    warmup: int

    @property
    def per_image_ms(self) -> float:
        """Median milliseconds per image (the median call time divided by the batch size)."""
        return self.median_ms / self.batch

    @property
    def images_per_s(self) -> float:
        """Throughput implied by the median call time."""
        return 1000.0 * self.batch / self.median_ms


def _median_ci_width(times: list[float]) -> float:
    """Relative width of the distribution-free 95% confidence interval of the median (order statistics)."""
    ordered, n = sorted(times), len(times)
    half = 0.98 * n**0.5  # 1.96 * sqrt(n) / 2 ranks either side of the middle
    lo, hi = max(0, int(n / 2 - half)), min(n - 1, int(n / 2 + half + 1))
    return (ordered[hi] - ordered[lo]) / statistics.median(ordered)


@dataclass(frozen=True)
class MeasureConfig:
    """The measurement conditions: torch threads, batch sizes, untimed warm-up calls (at least ``warmup`` and
    ``warmup_seconds``), timed calls per round (``repeats``), the relative width of the median's 95% interval to
    reach (``target_ci``) within at most ``max_seconds`` of timed calls per batch size (see
    :func:`measure_latency`), and the most seconds a run waits for an idle machine before measuring (see
    :func:`wait_until_idle`; it shapes no number, so it is not part of a trial's identity)."""

    threads: int = 1
    batches: tuple[int, ...] = (1, 32)
    repeats: int = 30
    max_seconds: float = 10.0
    warmup: int = 5
    warmup_seconds: float = 1.0
    target_ci: float = 0.02
    idle_wait: float = field(default=120.0, metadata={"identity": False})

    def __post_init__(self) -> None:
        check_fields(self, {"threads": AT_LEAST_1, "batches": AT_LEAST_1, "repeats": (lambda v: v >= 2, "at least 2"),
                            "max_seconds": POSITIVE, "target_ci": POSITIVE, "warmup": NON_NEGATIVE,
                            "warmup_seconds": NON_NEGATIVE, "idle_wait": NON_NEGATIVE})
        if not self.batches:
            raise ConfigError("batches: expected at least one batch size, got []", key="batches")


def measure_latency(model: nn.Module, input_size: tuple[int, int], batch: int = 1,
                    cfg: MeasureConfig = MeasureConfig(), channels: int = 3) -> Latency:
    """Time forward calls of ``model`` on a fixed random batch: the median and IQR of the call times.

    Warm-up: at least ``cfg.warmup`` untimed calls and ``cfg.warmup_seconds``. Then ``cfg.repeats`` timed calls,
    and more (in rounds of ``repeats``) while the 95% confidence interval of the median is wider than
    ``cfg.target_ci`` of it and less than ``cfg.max_seconds`` were spent timing; ``Latency.repeats`` says how
    many were made. Runs under ``torch.inference_mode`` in eval mode with ``cfg.threads`` intra-op threads and
    the garbage collector paused; the model's train/eval flags and torch's thread count are restored afterwards.
    """
    if batch < 1:
        raise ValueError(f"need batch >= 1; got {batch=}")
    threads, warmup, repeats = cfg.threads, cfg.warmup, cfg.repeats
    warmup_seconds, max_seconds, target_ci = cfg.warmup_seconds, cfg.max_seconds, cfg.target_ci
    steady_allocator()
    x = _example_input(model, batch, channels, input_size)
    times: list[float] = []
    gc_was_enabled = gc.isenabled()
    with eval_mode(model), _num_threads(threads), torch.inference_mode():
        start = time.perf_counter()
        calls = 0
        while calls < warmup or time.perf_counter() - start < warmup_seconds:
            model(x)
            calls += 1
        gc.collect()
        gc.disable()
        try:
            spent = 0.0
            while not times or (_median_ci_width(times) > target_ci and spent < max_seconds):
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    model(x)
                    times.append(time.perf_counter() - t0)
                    spent += times[-1]
        finally:
            if gc_was_enabled:
                gc.enable()
    q1, median, q3 = statistics.quantiles([t * 1000.0 for t in times], n=4, method="inclusive")
    return Latency(median_ms=median, iqr_ms=q3 - q1, batch=batch, threads=threads,
                   input_size=(int(input_size[0]), int(input_size[1])), repeats=len(times), warmup=calls)


def latency_medians(figures: dict[str, Any]) -> list[str]:
    """The keys of the median latencies among :func:`measure`'s figures: ``latency_ms``, ``latency_b32_ms``..."""
    return [k for k in figures if k.startswith("latency") and k.endswith("_ms")
            and not k.endswith(("_iqr_ms", "_per_image_ms"))]


def flanked(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A baseline's figures from its two measurements on either side of a pruned model's: each latency figure the
    mean of the two, and per batch size its drift (``latency_drift``, ``latency_b32_drift``...): how far the median
    moved between them, relative to their mean. A reduction is only as good as its baseline's drift."""
    out = {**after, **{k: (before[k] + after[k]) / 2 for k in after if k.startswith("latency") and k.endswith("_ms")}}
    for k in latency_medians(after):
        out[f"{k.removesuffix('_ms')}_drift"] = abs(after[k] - before[k]) / out[k] if out[k] > 0 else 0.0
    return out


@cache
def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _load_average() -> float:
    """The 1-minute system load average (-1.0 where unknown): above the usable cores, timings are contended."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return -1.0


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat (Linux), else None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_cores(interval: float = 1.0) -> float:
    """How many cores were busy (all processes) over the next ``interval`` seconds; NaN where unknown."""
    first = _cpu_times()
    time.sleep(interval)
    second = _cpu_times()
    if first is None or second is None or second[1] == first[1]:
        return float("nan")
    return (second[0] - first[0]) / (second[1] - first[1]) * (os.cpu_count() or 1)


IDLE_CORES = 0.25  # fewer busy cores than this: the machine is idle enough to measure latency


def wait_until_idle(threshold: float = IDLE_CORES, max_wait: float = 120.0) -> tuple[float, float]:
    """Wait until the machine is idle (fewer than ``threshold`` cores busy over one second), at most ``max_wait``
    seconds, so that a latency is not measured beside other work (e.g. a Ray cluster still shutting down). Returns
    (seconds waited, busy cores in the last second): the caller reports a machine that never became idle."""
    start = time.perf_counter()
    busy = busy_cores()
    while busy >= threshold and time.perf_counter() - start < max_wait:  # NaN (unknown) does not wait
        busy = busy_cores()
    return time.perf_counter() - start, busy


def _usable_cores() -> int:
    """Logical cores this process may run on (its CPU affinity), else all logical cores."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine_info() -> dict[str, str | int]:
    """The conditions of a measurement: CPU model, logical and usable cores, torch version and threads, allocator."""
    return {"cpu": _cpu_model(), "logical_cores": os.cpu_count() or 1, "usable_cores": _usable_cores(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "allocator": steady_allocator()}


def measure(model: nn.Module, input_size: tuple[int, int], cfg: MeasureConfig = MeasureConfig(),
            channels: int = 3) -> dict[str, float | int | str]:
    """All measurements of ``model`` in one flat dict with stable keys, and the conditions they were taken in.

    Keys: ``params``, ``size_bytes``, ``macs``; per batch size ``b``: ``latency_ms`` and ``latency_iqr_ms``
    for ``b == 1``, else ``latency_b{b}_ms``, ``latency_b{b}_iqr_ms`` and ``latency_b{b}_per_image_ms``;
    conditions: ``threads``, ``repeats``, ``warmup``, ``input_h``, ``input_w``, ``cpu``, ``usable_cores``,
    ``torch``, ``allocator`` and ``load_avg_1m`` (the system load before timing: other processes inflate latencies).
    """
    load = _load_average()
    out: dict[str, float | int | str] = {
        "params": count_params(model),
        "size_bytes": size_bytes(model),
        "macs": count_macs(model, input_size, channels),
    }
    for b in cfg.batches:
        lat = measure_latency(model, input_size, batch=b, cfg=cfg, channels=channels)
        prefix = "latency" if b == 1 else f"latency_b{b}"
        out[f"{prefix}_ms"] = lat.median_ms
        out[f"{prefix}_iqr_ms"] = lat.iqr_ms
        if b != 1:
            out[f"{prefix}_per_image_ms"] = lat.per_image_ms
    info = machine_info()
    out.update(threads=cfg.threads, repeats=cfg.repeats, warmup=cfg.warmup, input_h=int(input_size[0]),
               input_w=int(input_size[1]), cpu=info["cpu"], usable_cores=info["usable_cores"], torch=info["torch"],
               allocator=info["allocator"], load_avg_1m=load)
    return out
