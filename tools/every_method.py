"""Every registered method prunes each backbone to each budget (prune only: no recovery, no measurement).

Issue 15 asks that every method run on ``dlib-resnet29`` and ``mobilefacenet``, with a row that says
``infeasible`` and why where one cannot reach a budget. This prints one line per method, backbone and budget:
the status, the compression reached (against the unpruned transfer baseline), the reason where infeasible and
the seconds the pruning took. It trains a small transfer baseline per backbone on ``--dataset`` first::

    ETLBENCH_DATA=../shared/data python tools/every_method.py [--dataset synthetic] [--compressions 4 16]
"""

from __future__ import annotations

import argparse
import time

import torch

from etlbench.plugins import METHODS
from etlbench.train import TrainConfig
from etlbench.transfer import TransferSpec
from etlbench.trial import TrialSpec, prune_context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["dlib-resnet29", "mobilefacenet"])
    parser.add_argument("--compressions", nargs="+", type=float, default=[4.0, 16.0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--task", default="gender")
    parser.add_argument("--cache", default="runs/every-method-cache")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for backbone in args.backbones:
        setting = TransferSpec(task=args.task, dataset=args.dataset, backbone=backbone, max_train=256, seed=0,
                               train=TrainConfig(epochs=1)).resolved()
        for name in METHODS:
            for compression in args.compressions:
                method, budget = TrialSpec(setting, method=name, compression=compression).configure()
                ctx, _ = prune_context(TrialSpec(setting, method=name, compression=compression), args.cache)
                method.shared_stage(ctx)
                start = time.perf_counter()
                try:
                    out = method.prune(ctx, budget)
                    line = f"{out.status} {ctx.baseline_params / out.params:.2f}x {out.reason}"
                except Exception as err:  # a method that fails is a finding, not the end of the table
                    line = f"error {type(err).__name__}: {err}"
                print(f"{backbone:14s} {name:16s} {compression:5g}x  {line}  ({time.perf_counter() - start:.1f} s)",
                      flush=True)


if __name__ == "__main__":
    main()
