"""The Ray runner and its results database, end to end on synthetic faces (real Ray, real SQLite, real kills)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import etlbench
from etlbench.config import parse_spec
from etlbench.errors import RunnerError
from etlbench.identity import code_version
from etlbench.plan import ExperimentSpec
from etlbench.registry import METHODS
from etlbench.results import COLUMNS, ResultsStore
from etlbench.runner import execute
from etlbench.runner.execute import run_experiment

TINY = {"tasks": {"gender": {"dataset": "synthetic"}}, "max_train": 64, "threads": 1, "seeds": [1],
        "transfer": {"epochs": 1, "batch_size": 16, "precision": "fp32"},
        "recovery": {"max_steps": 2, "batch_size": 16, "precision": "fp32"},
        "measure": {"threads": 1, "batches": [1, 4], "repeats": 5, "max_seconds": 0.5, "idle_wait": 5}}

PLUGIN = '''
"""Test plugins, installed through the entry-point group like any third-party package."""
import os
from pathlib import Path

from etlbench.methods import PruningMethod


class Crashing(PruningMethod):
    """Kills its worker process the first time (a marker file remembers), then scores like magnitude."""

    def __init__(self, marker: str = "", policy="global", max_layer_ratio=0.95):
        super().__init__(policy, max_layer_ratio)
        self.marker = Path(marker)

    def importance(self, model, ctx):
        if not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        return self.channel_scores

    def channel_scores(self, name, layer):
        return layer.weight.detach().abs().flatten(1).sum(1)


class Raising(PruningMethod):
    """A criterion with a bug."""

    def channel_scores(self, name, layer):
        raise RuntimeError("criterion exploded")
'''


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A third-party package (module + dist-info with entry points) on the path of this process and of Ray's."""
    site = tmp_path / "site"
    dist = site / "etlbench_faulty-0.0.dist-info"
    dist.mkdir(parents=True)
    (site / "etlbench_faulty.py").write_text(PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: etlbench-faulty\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[etlbench.methods]\ncrashing = etlbench_faulty:Crashing\n"
                                           "raising = etlbench_faulty:Raising\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # forget the plugins afterwards
    monkeypatch.setattr(METHODS, "_entry_points_loaded", False)
    return tmp_path


def test_store_keeps_one_row_per_trial(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.sqlite") as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        run = store.start_run({"name": "x"}, {"cpu": "test"})
        store.put({"trial_id": "a", "status": "failed", "task": "age", "error": "boom"}, {"k": 1}, run)
        store.put({"trial_id": "a", "status": "ok", "task": "age", "metric": 5.0, "extra": 1, "code_version": "c1"},
                  {"k": 1}, run, experiment="exp")
        store.put({"trial_id": "b", "status": "infeasible", "task": "gender"}, {"k": 2}, run)
        assert store.statuses() == {"a": "ok", "b": "infeasible"}
        df = store.frame()
        assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS) and "extra" in df.columns
        a = df.set_index("trial_id").loc["a"]
        assert a["metric"] == 5.0 and a["error"] is None  # the replaced row, not a merge with the failed one
        # every row says what produced it: the code, the experiment, the run, and when it was stored
        assert (a["code_version"], a["experiment"], a["run_id"]) == ("c1", "exp", run) and a["updated_at"] > 0
        assert df.set_index("trial_id").loc["b", "updated_at"] >= a["updated_at"]
        assert [r["trial_id"] for r in store.rows()] == ["a", "b"]  # in the order they were last written
        store.finish_run(run, {"wall_seconds": 1.0})
        assert store.runs()[0]["summary"] == {"wall_seconds": 1.0}
        csv = pd.read_csv(store.export_csv(tmp_path / "results.csv"))
        assert len(csv) == 2 and list(csv.columns[: len(COLUMNS)]) == list(COLUMNS)


@pytest.mark.slow
def test_run_shares_stages_records_failures_and_resumes(plugins: Path, no_data_root: None) -> None:
    out = plugins / "run"
    marker = plugins / "crashed-once"
    spec = parse_spec({**TINY, "name": "tiny", "compressions": [4, 5000],
                       "methods": {"etl": {"probe_samples": 64}, "magnitude": {}, "crashing": {"marker": str(marker)},
                                   "raising": {}}})
    summary = run_experiment(spec, out, workers=2, show_progress=False)
    assert summary.planned == summary.trained == 8 and summary.workers == 2
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == 8 and list(csv.columns[: len(COLUMNS)]) == list(COLUMNS)
    df = csv.set_index(["method", "compression"])
    for method in ("etl", "magnitude", "crashing"):  # the crashing worker died once; Ray retried it
        row = df.loc[(method, 4.0)]
        assert row["status"] == "ok", row["error"]
        assert abs(row["compression_achieved"] / 4 - 1) <= 0.1 and row["size_bytes"] < row["baseline_size_bytes"] / 3
        assert row["latency_ms"] > 0 and row["latency_b4_ms"] > 0 and row["measure_threads"] == 1
        assert row["baseline_latency_drift"] >= 0  # timed between two timings of its baseline
        # the file on disk; the measured copy is an in-memory buffer, whose zip records are named differently
        assert (out / row["model_file"]).stat().st_size == pytest.approx(row["size_bytes"], rel=0.01)
    assert marker.exists()
    # the filter-pruning baselines cannot reach 5000x; ETL can, by cutting the network early
    assert df.loc[("magnitude", 5000.0), "status"] == df.loc[("crashing", 5000.0), "status"] == "infeasible"
    assert df.loc[("etl", 5000.0), "status"] == "ok" and df.loc[("etl", 5000.0), "compression_achieved"] > 4500
    assert (df.loc[("raising", 4.0), "status"], df.loc[("raising", 5000.0), "status"]) == ("failed", "failed")
    assert "criterion exploded" in df.loc[("raising", 4.0), "error"]
    with ResultsStore(out / "results.sqlite") as store:
        failed = store.rows(status="failed")
        assert "Traceback" in failed[0]["traceback"]
        frame = store.frame()
        assert set(frame["code_version"]) == {code_version()} and set(frame["experiment"]) == {"tiny"}
        assert set(frame["run_id"]) == {1} and set(frame["backbone"]) == {"dlib-resnet29"}
        trained = frame[frame["status"] != "failed"]  # (a failed row has only the header: no data columns)
        assert trained["data_fingerprint"].notna().all() and frame["data_fingerprint"].nunique() == 1
        env = store.runs()[0]["environment"]
        assert env["workers"] == 2 and env["threads_per_trial"] == 1 and env["cpu"]
    assert len(list((out / "cache").glob("etl-probes-*.npz"))) == 1  # ETL's probes: one shared stage
    assert df.loc[("etl", 4.0), "probe_seconds"] == df.loc[("etl", 5000.0), "probe_seconds"]
    assert (out / "figures" / "gender-metric-vs-params.png").is_file() and (out / "leaderboard.html").is_file()
    board = (out / "leaderboard.md").read_text()
    assert "## gender" in board and "SYNTHETIC DATA for gender" in board

    with pytest.raises(RunnerError, match="--resume"):
        run_experiment(spec, out, show_progress=False)
    again = run_experiment(spec, out, resume=True, workers=2, show_progress=False)
    assert (again.skipped, again.trained, again.measured) == (6, 2, 0)  # only the failed trials run again
    assert again.statuses == {"ok": 4, "infeasible": 2, "failed": 2}
    assert len(pd.read_csv(out / "results.csv")) == 8
    with ResultsStore(out / "results.sqlite") as store:
        runs = store.frame().groupby("status")["run_id"].agg(set).to_dict()
    assert runs == {"ok": {1}, "infeasible": {1}, "failed": {2}}  # only the re-run rows were written again


def _rows(db: Path) -> dict[str, tuple[str, str]]:
    """The stored rows by trial id; none while the driver has created the file but not yet its tables."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        if not con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'trials'").fetchone():
            return {}
        return {tid: (status, row) for tid, status, row in con.execute("SELECT trial_id, status, row FROM trials")}


def _as_in_a_terminal() -> None:
    """Ctrl-C at its default, as in a terminal: a shell starts a background command (``cmd &``) with SIGINT ignored,
    the driver would inherit that, and Python never raises KeyboardInterrupt where SIGINT is ignored at startup."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_and_wait_for_rows(tmp_path: Path, n: int = 2) -> tuple[subprocess.Popen, list[str], Path]:
    """A run of 9 tiny trials on one worker, in its own process group, once ``n`` rows are stored."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({**TINY, "name": "killed", "methods": ["magnitude", "random", "taylor"],
                                "compressions": [2, 4, 8]}))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "etlbench.cli", "run", "--config", str(spec), "--out", str(out), "--workers", "1",
           "--no-progress"]
    driver = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, preexec_fn=_as_in_a_terminal)
    db, deadline = out / "results.sqlite", time.monotonic() + 300
    before: dict[str, tuple[str, str]] = {}
    while time.monotonic() < deadline and len(before) < n and driver.poll() is None:
        time.sleep(0.5)
        if db.exists():
            before = _rows(db)
    assert driver.poll() is None, driver.stderr.read()[-3000:]
    return driver, cmd, db


@pytest.mark.slow
def test_ctrl_c_stops_the_run_at_once_and_says_how_to_resume(tmp_path: Path, no_data_root: None) -> None:
    driver, cmd, db = _start_and_wait_for_rows(tmp_path)
    start = time.monotonic()
    os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
    _, err = driver.communicate(timeout=60)
    seconds = time.monotonic() - start
    time.sleep(1)
    left = subprocess.run(["pgrep", "-g", str(driver.pid)], capture_output=True, text=True).stdout.split()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGKILL)
    last = err.strip().splitlines()[-1]
    assert driver.returncode == 130 and seconds < 30 and not left, (driver.returncode, seconds, left, err[-2000:])
    assert "Traceback" not in err and last.startswith("etlbench: interrupted: ") and f"in {db}" in last, err
    stored = _rows(db)
    assert f"0 of 9 trials are done, {len(stored)} trained (to measure) and 0 failed" in last, last
    resume = shlex.split(last.partition("go on with: ")[2])
    assert resume == ["etlbench", *cmd[3:], "--resume"]
    resumed = subprocess.run([*cmd, "--resume", "--json"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["statuses"] == {"ok": 9}
    print(f"ctrl-c: exit 130 {seconds:.1f} s after SIGINT, {len(stored)} rows kept, nothing left running; "
          f"--resume finished all 9")


@pytest.mark.slow
def test_killing_the_driver_and_resuming_loses_nothing_stored(tmp_path: Path, no_data_root: None) -> None:
    driver, cmd, db = _start_and_wait_for_rows(tmp_path)
    os.kill(driver.pid, signal.SIGKILL)  # the driver only: Ray's own processes are left to notice
    driver.wait()
    time.sleep(2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGKILL)  # then clean up whatever of Ray is left in the session
    stored = _rows(db)
    assert len(stored) >= 2 and all(s == "trained" for s, _ in stored.values())
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    resumed = subprocess.run([*cmd, "--resume", "--json"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    assert summary["planned"] == 9 and summary["trained"] == 9 - len(stored) and summary["measured"] == 9
    after = _rows(db)
    assert len(after) == 9 and all(s == "ok" for s, _ in after.values())
    for tid, (_, row) in stored.items():  # what was stored before the kill was kept, not recomputed
        assert json.loads(after[tid][1])["metric"] == json.loads(row)["metric"]
        assert json.loads(after[tid][1])["trial_seconds"] == json.loads(row)["trial_seconds"]
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*), COUNT(DISTINCT trial_id) FROM trials").fetchone() == (9, 9)
    print(f"kill-and-resume: {len(stored)} of 9 trials stored before the SIGKILL, {summary['trained']} run on resume "
          f"(at most the 1 in flight lost), {summary['measured']} measured, 9 rows, no duplicates")


@pytest.mark.slow
def test_train_only_then_measure_only_measures_what_was_trained_and_trains_nothing(tmp_path: Path,
                                                                                  no_data_root: None) -> None:
    """A long run stopped before its end: measure what it trained on the idle machine; the rest stays to run."""
    one, two = ({**TINY, "name": "staged", "compressions": [4], "methods": m}
                for m in (["magnitude"], ["magnitude", "random"]))
    out = tmp_path / "run"
    with pytest.raises(RunnerError, match=r"holds no results\.sqlite"):
        run_experiment(parse_spec(one), out, only="measure")
    assert not out.exists()
    trained = run_experiment(parse_spec(one), out, workers=1, only="train", show_progress=False)
    assert (trained.trained, trained.measured, trained.statuses) == (1, 0, {"trained": 1})
    with pytest.raises(RunnerError, match="--resume"):
        run_experiment(parse_spec(two), out, workers=1, show_progress=False)
    measured = run_experiment(parse_spec(two), out, workers=1, only="measure", show_progress=False)
    assert (measured.planned, measured.trained, measured.measured) == (2, 0, 1)
    with ResultsStore(out / "results.sqlite") as store:
        rows = store.rows()
    assert [(r["method"], r["status"]) for r in rows] == [("magnitude", "ok")] and rows[0]["latency_ms"] > 0


def test_cli_run_rejects_a_bad_spec_before_starting(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from etlbench.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        tasks: {gender: {dataset: synthetic}}
        methods: {magnitude: {epsilon: 0.1}}
        compressions: [4]
    """))
    assert main(["run", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "methods.magnitude.epsilon: method 'magnitude' does not take parameter 'epsilon'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(platform.machine() != "x86_64" or not Path("/proc/cpuinfo").is_file(),
                    reason="reads the CPU's flags from Linux's /proc/cpuinfo on x86_64")
def test_bf16_emulation_is_read_off_the_cpu() -> None:
    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert execute.bf16_is_emulated() == (not flags & {"avx512_bf16", "amx_bf16"})


def test_training_in_bf16_where_the_cpu_emulates_it_is_warned_of(monkeypatch: pytest.MonkeyPatch) -> None:
    def spec(transfer: str = "bf16", recovery: str = "bf16") -> ExperimentSpec:
        return parse_spec({**TINY, "name": "p", "methods": ["magnitude"], "compressions": [4],
                           "transfer": {**TINY["transfer"], "precision": transfer},
                           "recovery": {**TINY["recovery"], "precision": recovery}})

    monkeypatch.setattr(execute, "bf16_is_emulated", lambda: True)
    (both,) = execute.local_warnings(spec(), workers=1, cores=2)
    assert "transfer.precision and recovery.precision train under bf16" in both and "to fp32" in both
    (one,) = execute.local_warnings(spec(recovery="fp32"), workers=1, cores=2)
    assert "transfer.precision train" in one and "recovery.precision" not in one
    assert execute.local_warnings(spec("fp32", "fp32"), workers=1, cores=2) == []
    over, _ = execute.local_warnings(spec(), workers=4, cores=2)
    assert "4 workers x 1 threads oversubscribe the 2 usable cores" in over
    monkeypatch.setattr(execute, "bf16_is_emulated", lambda: False)
    assert execute.local_warnings(spec(), workers=1, cores=2) == []


def test_an_address_where_nothing_answers_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from etlbench.cli import main

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path / "o"), "--address", f"127.0.0.1:{port}"]) == 2
    # checked before anything else (ray.init itself would retry for minutes, then fail with another message)
    assert f"--address 127.0.0.1:{port}: nothing answers there" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path / "o"), "--address", "head-node"]) == 2
    assert "expected HOST:PORT, ray://HOST:PORT or auto" in capsys.readouterr().err


@pytest.mark.slow
def test_workers_running_other_code_than_the_driver_fail_their_trials(tmp_path: Path, no_data_root: None) -> None:
    # A Ray worker puts the driver's working directory first on its path: an edited etlbench/ there shadows the
    # package the driver imported, and its rows would carry trial ids of other code.
    shadow = tmp_path / "etlbench"
    shutil.copytree(Path(etlbench.__file__).parent, shadow, ignore=shutil.ignore_patterns("__pycache__"))
    # a change of code (a comment alone would keep the code version: it hashes the syntax tree)
    (shadow / "trial.py").write_text((shadow / "trial.py").read_text() + "\nEDITED_AFTER_THE_DRIVER_STARTED = True\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({**TINY, "name": "shadowed", "methods": ["random"], "compressions": [2]}))
    script = Path(sys.executable).parent / "etlbench"  # the console script: its folder, not the cwd, is sys.path[0]
    result = subprocess.run([str(script), "run", "--config", str(spec), "--out", str(tmp_path / "run"), "--json",
                             "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["statuses"] == {"failed": 1}
    assert "this Ray worker runs etlbench" in result.stderr and f"from {shadow}" in result.stderr


def test_a_busy_machine_makes_the_latencies_indicative_in_the_summary() -> None:
    from etlbench.runner.execute import RunSummary, run_summary_lines

    busy = RunSummary("out", 4, 0, 4, 4, {"ok": 4}, 2, 1, busy_cores_before_measure=1.9, measured_busy=True)
    assert "the machine was busy, the latencies are indicative only" in run_summary_lines(busy)[1]
    idle = RunSummary("out", 4, 0, 4, 4, {"ok": 4}, 2, 1, busy_cores_before_measure=0.1)
    assert "indicative" not in " ".join(run_summary_lines(idle))
