"""Cost of the transfer baseline on real data (skipped by default; ``pytest tests/benchmarks --benchmark-only``).

Gender transfer of dlib-resnet29 on UTKFace (5,600 train images, 3 epochs, 112 px) in a fresh process:
the targets on 2 CPU cores are under 15 minutes and under 4 GiB of peak memory (resident set size).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etlbench.measure import machine_info

MAX_SECONDS = 15 * 60
MAX_RSS_GIB = 4.0


@pytest.mark.parametrize("task", ["gender"])
def test_transfer_cost_on_real_faces(benchmark, real_data_root: Path, tmp_path: Path, task: str) -> None:
    cmd = [sys.executable, "-m", "etlbench.cli", "transfer", "--task", task, "--epochs", "3",
           "--data-root", str(real_data_root), "--out", str(tmp_path), "--json"]

    def run() -> tuple[dict, float]:
        start = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out), time.perf_counter() - start

    row, seconds = benchmark.pedantic(run, rounds=1, iterations=1)
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    benchmark.extra_info.update(wall_seconds=seconds, peak_rss_gib=peak_gib, metric=row["metric"],
                                probe_metric=row.get("probe_metric"), train_seconds=row["train_seconds"],
                                n_train=row["n_train"], **machine_info())
    print(f"\n{task} transfer: {seconds:.0f} s wall ({row['train_seconds']:.0f} s training), peak RSS "
          f"{peak_gib:.2f} GiB, test {row['metric_name']} {row['metric']:.4f} (probe {row.get('probe_metric')})")
    assert row["n_train"] == 5600
    assert seconds < MAX_SECONDS and peak_gib < MAX_RSS_GIB
