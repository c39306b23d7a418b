"""Benchmark: generating 1,000 synthetic 64 px faces (target: under 5 s on 2 CPU cores)."""

from __future__ import annotations

from etlbench.data.synthetic import make_synthetic_faces


def test_bench_generate_1000_faces_64px(benchmark) -> None:
    data = benchmark.pedantic(make_synthetic_faces, kwargs={"n": 1000, "size": 64, "seed": 0}, rounds=3, iterations=1)
    assert data["images"].shape == (1000, 64, 64, 3)
    assert benchmark.stats.stats.mean < 5.0
