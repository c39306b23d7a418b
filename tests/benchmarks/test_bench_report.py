"""Benchmark of ``etlbench report`` on the committed results databases (skipped by default; run with
``pytest tests/benchmarks --benchmark-only``).

Each committed ``results/*/results.sqlite`` is copied to a temporary folder and its whole report (leaderboard
.md/.csv/.html, figures as PNG and SVG) written from it; the target is under 10 s for the ``reference``
database (252 trials) on 2 cores. The figures are written to ``benchmark.extra_info``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from etlbench.measure import machine_info
from etlbench.report import load_results, write_report
from tests.conftest import REPO

TARGET_SECONDS = 10.0
DATABASES = sorted((REPO / "results").glob("*/results.sqlite"))


@pytest.mark.skipif(not DATABASES, reason="no committed results database under results/")
@pytest.mark.parametrize("database", DATABASES, ids=[p.parent.name for p in DATABASES])
def test_report_generation_time(benchmark, database: Path, tmp_path: Path) -> None:
    shutil.copy(database, tmp_path / "results.sqlite")
    trials = len(load_results(tmp_path))
    load_before = os.getloadavg()[0]
    result = benchmark.pedantic(lambda: write_report(tmp_path, formats=("png", "svg")), rounds=3, iterations=1)
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update(database=database.parent.name, trials=trials, files=len(result["written"]),
                                median_s=seconds, load_avg_1m=[load_before, os.getloadavg()[0]], **machine_info())
    print(f"\n{database.parent.name}: {trials} trials, {len(result['written'])} files, median {seconds:.2f} s "
          f"(load {load_before:.2f} -> {os.getloadavg()[0]:.2f})")
    assert seconds < TARGET_SECONDS, f"the report of {trials} trials took {seconds:.1f} s (target {TARGET_SECONDS} s)"
