"""Shared fixtures: where the real data lives (skipped, saying why, where it is absent)."""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SESSION = pytest.StashKey[pytest.Session]()


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


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SESSION] = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """When pytest is the program, end it with pytest's verdict once pytest is done, without tearing the
    interpreter down. The runner's tests start and stop Ray in this process several times, and ``ray.shutdown``
    leaves native threads running (grpc's event engines and timers, the GCS client's io service): tearing down
    the interpreter under them can crash (ray-project/ray#31145), and once in CI it turned a run whose every test
    passed into exit status 139. The exit handlers still run (Ray's, pytest's lock removal); only the teardown
    after them is skipped."""
    program = Path(sys.argv[0])
    session = config.stash.get(_SESSION, None)
    if session is None or not (program.name in ("pytest", "py.test") or program.parent.name == "pytest"):
        return  # pytest.main() called by another program: that program decides how it ends
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(int(session.exitstatus))
