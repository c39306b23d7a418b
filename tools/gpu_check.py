"""A device check of the GPU path: a spec's trials trained on CUDA through etlbench's own trial functions.

    python tools/gpu_check.py --config SPEC.yaml --seconds 360 > gpu.jsonl

For a machine lent for minutes that has torch but not Ray (Ray's wheel is larger than what such a machine may be
sent); the spec sets ``gpus`` (without it the same trials train on the CPU, as a dry run). It trains the first
setting's transfer baseline, then runs each trial (``shared_stage``, then ``train_trial``: prune on the CPU, recover
on the GPU, test), highest compression first, until ``--seconds`` have passed, and prints one JSON line per stage as
it goes: the environment, the baseline's metrics and seconds, and each trial's status, metric, retention, seconds
and error. Nothing is stored and nothing is measured: rows and latencies come from ``etlbench run``. Pair with a CPU
run of the same spec to compare the metrics.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from etlbench.config import load_spec
from etlbench.plan import plan
from etlbench.results import failure
from etlbench.train import use_threads
from etlbench.transfer import transfer_baseline
from etlbench.trial import shared_stage, train_trial


def emit(**record: Any) -> None:
    print(json.dumps({**record, "t": round(time.time(), 1)}, default=str), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="an experiment spec (YAML) that sets gpus")
    parser.add_argument("--seconds", type=float, default=360.0, help="start no trial after this many seconds")
    parser.add_argument("--cache", default="gpu-check-cache", help="where the baseline and probes are cached")
    args = parser.parse_args()
    deadline = time.time() + args.seconds
    spec = load_spec(path=args.config)
    trials = sorted(plan(spec), key=lambda t: (-(t.compression or 0), t.method))
    first = trials[0].setting
    emit(stage="env", torch=torch.__version__, gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
         device=first.device, threads=spec.threads, trials=len(trials))
    use_threads(spec.threads)
    data = first.load_data()
    start = time.perf_counter()
    base = transfer_baseline(first, Path(args.cache) / "transfer", data=data)[1]
    emit(stage="transfer", wall_s=round(time.perf_counter() - start, 1),
         **{k: base.get(k) for k in ("metric", "probe_metric", "val_metric", "train_seconds", "precision")})
    for i, t in enumerate(trials):
        if time.time() > deadline:
            emit(stage="deadline", not_run=[f"{x.method}@{x.compression}" for x in trials[i:]])
            break
        start = time.perf_counter()
        try:
            shared_stage(t, args.cache, data)
            row = train_trial(t, args.cache, data)[0]
        except Exception as err:  # reported as the runner reports it (status failed), and the check goes on
            row = failure(err)
        emit(stage="trial", method=t.method, compression=t.compression, wall_s=round(time.perf_counter() - start, 1),
             **{k: row.get(k) for k in ("status", "metric", "retention", "baseline_metric", "prune_seconds",
                                        "train_seconds", "error", "traceback")})
    if torch.cuda.is_available():
        emit(stage="end", max_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))


if __name__ == "__main__":
    main()
