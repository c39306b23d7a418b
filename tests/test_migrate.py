"""tools/migrate_results.py: rows of an older code version are re-keyed to today's ids only where their stored spec
equals today's plan, one experiment at a time, with their evaluations and model files."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path
from types import ModuleType

import pytest

from etlbench.config import load_spec
from etlbench.identity import canonical, code_version
from etlbench.plan import plan
from etlbench.results import ResultsStore

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migrate_results", REPO / "tools" / "migrate_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _store(out: Path, trials: list, experiment: str, spec_of=canonical) -> None:
    (out / "models").mkdir(exist_ok=True)
    with ResultsStore(out / "results.sqlite") as store:
        for t in trials:
            old = f"old-{experiment}-{t.method}"
            (out / "models" / f"{old}.pt").write_bytes(b"weights")
            store.put({"trial_id": old, "status": "ok", "task": t.task, "method": t.method,
                       "compression": t.compression, "seed": t.seed, "code_version": "0.1.0+oldcode",
                       "backbone": "dlib-resnet29", "model_file": f"models/{old}.pt"},
                      spec_of(t), experiment=experiment)
            store.put_evaluation({"trial_id": old, "fingerprint": "f00d", "dataset": "other", "metric": 0.5})


def _trials(out: Path) -> dict[str, tuple[str, dict]]:
    db = sqlite3.connect(out / "results.sqlite")
    return {tid: (experiment, json.loads(row)) for tid, experiment, row in
            db.execute("SELECT trial_id, experiment, row FROM trials")}


def test_matching_rows_are_rekeyed_with_their_evaluations_and_models(tmp_path: Path, tool: ModuleType) -> None:
    planned = plan(load_spec("smoke"))[:2]
    _store(tmp_path, planned, "smoke")
    _store(tmp_path, planned[:1], "another")  # another experiment in the same folder: left alone
    assert tool.migrate(tmp_path, "smoke", "oldcode") == 0
    rows = _trials(tmp_path)
    for t in planned:
        experiment, row = rows[t.trial_id()]
        assert (experiment, row["code_version"]) == ("smoke", code_version())
        assert row["migrated_from"] == f"old-smoke-{t.method} (code 0.1.0+oldcode)"
        assert (tmp_path / row["model_file"]).read_bytes() == b"weights"
        assert not (tmp_path / "models" / f"old-smoke-{t.method}.pt").exists()
    assert rows[f"old-another-{planned[0].method}"][0] == "another"
    evaluated = {tid for (tid,) in sqlite3.connect(tmp_path / "results.sqlite").execute(
        "SELECT trial_id FROM evaluations")}
    assert evaluated == {t.trial_id() for t in planned} | {f"old-another-{planned[0].method}"}


def test_a_row_whose_spec_differs_from_todays_plan_stops_the_whole_migration(tmp_path: Path, tool: ModuleType,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    planned = plan(load_spec("smoke"))[:2]

    def other_budget(t):  # a recovery field of another value than today's plan has
        spec = canonical(t)
        return {**spec, "recovery": {**spec["recovery"], "max_steps": 99}}

    _store(tmp_path, planned[:1], "smoke")
    _store(tmp_path, planned[1:], "smoke", spec_of=other_budget)
    before = _trials(tmp_path)
    assert tool.migrate(tmp_path, "smoke", "oldcode") == 1
    assert "recovery: stored" in capsys.readouterr().err
    assert _trials(tmp_path) == before  # nothing re-keyed, no file moved
    assert tool.migrate(tmp_path, "smoke", "othercode") == 1  # rows of another code version are refused too
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _store(elsewhere, planned, "another")
    assert tool.migrate(elsewhere, "smoke", "oldcode") == 1  # a folder without the preset's rows says so
    assert "no rows of experiment 'smoke'" in capsys.readouterr().err
