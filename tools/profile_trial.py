"""Where a trial's time goes, and how close its training runs to the machine's peak (issue 13).

    OMP_NUM_THREADS=1 python tools/profile_trial.py --task head_pose --method taylor --compression 4 \
        --recovery '{samples: 11024, precision: bf16, norm: batch, eval_at: [0.25, 0.5, 1]}' [--cache DIR]

Runs one trial (``train_trial``: prune, recover, test; the transfer baseline comes from ``--cache`` when it is
there) under cProfile on an idle machine and prints: the seconds of each stage (pruning with its importance
pass, preparing the norms, the probe of the pruned trunk, the training steps, val and test evaluations); the
training throughput in images/s and FLOP/s (a training step is taken as 3x the forward MACs x 2 FLOPs); and
the peak of this machine for the same threads, measured as the FLOP/s of a large fp32 and bf16 matrix product.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from dataclasses import replace

import torch
import yaml

from etlbench import measure
from etlbench.train import TrainConfig, use_threads
from etlbench.transfer import TransferSpec
from etlbench.trial import RECOVERY, TrialSpec, shared_stage, train_trial

#: Stages by the functions that do them (cumulative seconds of each, from the profile).
STAGES = {"setting (backbone, baseline, norms)": "prune_context",
          "prune (all)": "prune", "  importance pass": "importance", "prepare norms": "prepare",
          "probe features": "trunk_features", "probe fit": "fit_probe", "fine-tune (all)": "fine_tune",
          "  backward": "backward", "  optimizer step": "step", "  evaluation (val and test)": "evaluate",
          "  preprocess": "__call__"}


def gemm_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of an n x n matrix product in ``dtype`` on this process's threads."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def _stage_seconds(stats: pstats.Stats) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, name in STAGES.items():
        times = [v[3] for (file, _, func), v in stats.stats.items()
                 if func == name and ("etlbench" in file or name in ("backward", "step"))
                 and (name != "__call__" or "backbones/base.py" in file)]
        out[label] = max(times, default=0.0) if name != "__call__" else sum(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="head_pose")
    parser.add_argument("--method", default="taylor")
    parser.add_argument("--compression", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--transfer", default="{}", help="YAML mapping of TrainConfig fields for the baseline")
    parser.add_argument("--recovery", default="{}", help="YAML mapping of TrainConfig fields over RECOVERY")
    parser.add_argument("--data-root", default=os.environ.get("ETLBENCH_DATA"))
    parser.add_argument("--cache", default="runs/profile-cache")
    args = parser.parse_args()
    use_threads(args.threads)

    def fields(text: str) -> dict:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in (yaml.safe_load(text) or {}).items()}

    setting = TransferSpec(task=args.task, data_root=args.data_root, seed=args.seed, threads=args.threads,
                           train=replace(TrainConfig(), **fields(args.transfer))).resolved()
    spec = TrialSpec(setting, args.method, args.compression, recovery=replace(RECOVERY, **fields(args.recovery)))
    data = setting.load_data()
    shared_stage(spec, args.cache, data)  # the baseline (and ETL's probes) exist before the timing
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    row, model = train_trial(spec, args.cache, data)
    profile.disable()
    total = time.perf_counter() - start
    if model is None:
        raise SystemExit(f"the trial did not train: {row.get('status')}: {row.get('error')}")
    stages = _stage_seconds(pstats.Stats(profile))
    print(f"trial {args.task} {args.method} {args.compression:g}x seed {args.seed}, {args.threads} thread(s), "
          f"{spec.recovery.precision}: {total:.1f} s in all")
    for label, seconds in stages.items():
        print(f"  {label:32s} {seconds:7.1f} s  ({seconds / total:5.1%})")
    size = tuple(row["input_size"])
    macs = measure.count_macs(model, size)
    trained = row["samples_seen"] - len(data.images["train"])  # the probe's pass aside
    train_time = stages["fine-tune (all)"] - stages["  evaluation (val and test)"]
    flops = 6 * macs * trained / train_time
    print(f"training: {trained / train_time:.0f} images/s, {flops / 1e9:.1f} GFLOP/s "
          f"({macs / 1e6:.0f} M MACs per image forward)")
    for dtype in (torch.float32, torch.bfloat16):
        peak = gemm_peak(dtype)
        print(f"  peak of a {str(dtype).removeprefix('torch.')} matrix product here: {peak / 1e9:.1f} GFLOP/s; "
              f"training runs at {flops / peak:.0%} of it")


if __name__ == "__main__":
    main()
