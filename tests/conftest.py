"""Shared fixtures: where the real data lives (skipped, saying why, where it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    root = Path(os.environ["ETLBENCH_DATA"]) if os.environ.get("ETLBENCH_DATA") else REPO.parent / "shared" / "data"
    return root if root.is_dir() else None


@pytest.fixture
def real_data_root() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("real datasets absent: set ETLBENCH_DATA to the folder of the canonical npz files")
    return root


@pytest.fixture
def no_data_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ETLBENCH_DATA", raising=False)
