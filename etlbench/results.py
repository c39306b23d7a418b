"""The results schema and database: the columns of a row, the builders of its header and of a failed row,
and one SQLite file (WAL mode) with one row per trial, keyed by its stable trial id.

Every row says what produced it: its trial id, the code version (:func:`etlbench.identity.code_version`), the
experiment, the backbone and the run that stored it. Only the runner's driver writes, one transaction per trial as
it ends, so a killed driver loses at most the trials that were running and never leaves a partial or duplicate
row. Beside the rows, each run's spec and environment are stored. :meth:`ResultsStore.frame` is the one tidy
view (after ShrinkBench): a pandas DataFrame with the fixed columns of docs/design.md first, then every
method-specific field. The runner writes through this module and the report reads through it; neither imports
the other's internals, and nothing here imports torch.
"""

from __future__ import annotations

import json
import sqlite3
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etlbench.errors import ResultsError
from etlbench.identity import canonical, code_version

if TYPE_CHECKING:
    import pandas as pd

    from etlbench.trial import TrialSpec

#: The columns of docs/design.md, then what produced the row, in order; method-specific fields follow them.
COLUMNS = ("trial_id", "task", "dataset", "backbone", "method", "compression", "seed", "status", "error",
           "metric_name", "higher_is_better", "metric", "baseline_metric", "retention", "params", "params_reduction",
           "size_bytes", "macs", "macs_reduction", "latency_ms", "latency_iqr_ms", "latency_reduction",
           "train_seconds", "samples_seen", "cut_layer", "code_version", "experiment", "run_id", "updated_at")
#: What a report never averages across: each (experiment, backbone) is its own section, of one code version.
SCOPE = ("experiment", "backbone")
#: Fields of a row that are lists or dicts: in the tidy frame only on request, never in results.csv (``metrics``:
#: every test metric of the task, e.g. verification's accuracy_std and auc beside its accuracy, and its baseline's).
NESTED = ("recovery_curve", "group_metrics", "baseline_group_metrics", "metrics", "baseline_metrics")
#: Statuses that end a trial for good; ``trained`` rows still wait for the measurement stage, ``failed`` re-run.
FINAL = ("ok", "infeasible")


def header(spec: TrialSpec) -> dict[str, Any]:
    """The columns that identify a trial's row and the code that produced it."""
    return {"trial_id": spec.trial_id(), "task": spec.task, "dataset": spec.setting.dataset_name,
            "data_fingerprint": spec.setting.data_fingerprint, "backbone": spec.backbone, "method": spec.method,
            "compression": spec.compression, "seed": spec.seed, "code_version": code_version()}


def failure(err: BaseException) -> dict[str, Any]:
    """The fields of a failed row: the error on one line (the last of its message: a remote error's own) and
    the whole traceback."""
    lines = str(err).strip().splitlines()
    return {"status": "failed", "error": f"{type(err).__name__}: {lines[-1] if lines else ''}",
            "traceback": "".join(traceback.format_exception(err))}


def failed_row(spec: TrialSpec, err: BaseException) -> dict[str, Any]:
    """A whole row for a trial that raised ``err``."""
    return {**header(spec), **failure(err)}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    trial_id TEXT PRIMARY KEY, status TEXT NOT NULL, task TEXT, method TEXT, compression REAL, seed INTEGER,
    run_id INTEGER, updated_at REAL NOT NULL, spec TEXT NOT NULL, row TEXT NOT NULL, code_version TEXT,
    experiment TEXT, backbone TEXT);
CREATE TABLE IF NOT EXISTS evaluations (
    trial_id TEXT NOT NULL, fingerprint TEXT NOT NULL, dataset TEXT, updated_at REAL NOT NULL, row TEXT NOT NULL,
    code_version TEXT, PRIMARY KEY (trial_id, fingerprint));
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT, started_at REAL NOT NULL, finished_at REAL, spec TEXT NOT NULL,
    environment TEXT NOT NULL, summary TEXT);
"""


class ResultsStore:
    """``DIR/results.sqlite``: trials (one row each), runs (spec, environment and summary of each run) and
    evaluations (a trial's model scored on another dataset, keyed by trial and dataset fingerprint)."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        """Open (and create) the database for the runner; ``readonly`` opens an existing one for reading only (the
        report), which never changes the file."""
        self.path = Path(path)
        try:
            if readonly:
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, timeout=30.0)
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.OperationalError as err:  # a folder, no permission, a lock: the file is not the problem
            raise ResultsError(f"{self.path}: cannot open the results database ({err})") from err
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise ResultsError(f"{self.path}: not an SQLite database ({err})") from err
        if readonly:
            missing = sorted({"trials", "runs"} - tables)
            if missing:
                self._db.close()
                raise ResultsError(f"{self.path}: not an etlbench results database: it has no table "
                                   f"{' or '.join(missing)} (tables: {sorted(tables) or 'none'})")
            return
        if tables and "trials" not in tables:
            self._db.close()
            raise ResultsError(f"{self.path}: an SQLite database of something else (tables: {sorted(tables)}); "
                               f"choose another --out")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(trials)")}
        for column in ("code_version", "experiment", "backbone"):  # databases written before these columns
            if column not in columns:
                self._db.execute(f"ALTER TABLE trials ADD COLUMN {column} TEXT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_run(self, spec: dict[str, Any], environment: dict[str, Any]) -> int:
        with self._db:
            cur = self._db.execute("INSERT INTO runs (started_at, spec, environment) VALUES (?, ?, ?)",
                                   (time.time(), _dumps(spec), _dumps(environment)))
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, summary: dict[str, Any]) -> None:
        with self._db:
            self._db.execute("UPDATE runs SET finished_at = ?, summary = ? WHERE run_id = ?",
                             (time.time(), _dumps(summary), run_id))

    def runs(self) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT run_id, started_at, finished_at, spec, environment, summary FROM runs "
                               "ORDER BY run_id")
        return [{"run_id": r[0], "started_at": r[1], "finished_at": r[2], "spec": json.loads(r[3]),
                 "environment": json.loads(r[4]), "summary": json.loads(r[5]) if r[5] else None} for r in cur]

    def put(self, row: dict[str, Any], spec: TrialSpec | dict[str, Any], run_id: int | None = None,
            experiment: str | None = None) -> None:
        """Insert or replace the row of ``row['trial_id']`` in one transaction; the row is stamped with the run
        and experiment that stored it and the time."""
        now = time.time()
        row = {**row, "run_id": run_id, "experiment": experiment if experiment is not None else row.get("experiment"),
               "updated_at": now}
        with self._db:
            self._db.execute(
                "INSERT INTO trials (trial_id, status, task, method, compression, seed, run_id, updated_at, spec, row, "
                "code_version, experiment, backbone) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(trial_id) DO UPDATE SET status = excluded.status, run_id = excluded.run_id, "
                "updated_at = excluded.updated_at, spec = excluded.spec, row = excluded.row, "
                "code_version = excluded.code_version, experiment = excluded.experiment, backbone = excluded.backbone",
                (row["trial_id"], row["status"], row.get("task"), row.get("method"), row.get("compression"),
                 row.get("seed"), run_id, now, _dumps(canonical(spec)), _dumps(row), row.get("code_version"),
                 row["experiment"], row.get("backbone")))

    def specs(self) -> dict[str, dict[str, Any]]:
        """Trial id -> the stored trial spec (``canonical`` form) of every stored trial."""
        return {tid: json.loads(spec) for tid, spec in self._db.execute("SELECT trial_id, spec FROM trials")}

    def statuses(self) -> dict[str, str]:
        """Trial id -> status of every stored trial."""
        return dict(self._db.execute("SELECT trial_id, status FROM trials"))

    def rows(self, ids: Iterable[str] | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Stored rows (optionally only ``ids`` and/or one ``status``), in the order they were last written, each
        with the time it was (``updated_at``) and the run that wrote it (``run_id``)."""
        query, args = "SELECT trial_id, row, updated_at, run_id FROM trials", []
        if status is not None:
            query, args = query + " WHERE status = ?", [status]
        rows = [(tid, {**json.loads(r), "updated_at": at, "run_id": run_id})
                for tid, r, at, run_id in self._db.execute(query + " ORDER BY updated_at", args)]
        wanted = None if ids is None else set(ids)
        return [r for tid, r in rows if wanted is None or tid in wanted]

    def frame(self, curves: bool = False) -> pd.DataFrame:
        """Every trial as one tidy DataFrame: the columns of docs/design.md, then the method-specific fields
        (with ``curves``, also the nested fields of :data:`NESTED`: each trial's anytime recovery curve, its and
        its baseline's per-group metrics and all its and its baseline's test metrics). Rows written before rows
        carried their code version and experiment get them from their stored spec and the run that stored them."""
        import pandas as pd  # lazy: only the report needs pandas

        experiments = {r["run_id"]: r["spec"].get("name") for r in self.runs()}
        written = {tid: (json.loads(spec).get("code_version"), run_id)
                   for tid, spec, run_id in self._db.execute("SELECT trial_id, spec, run_id FROM trials")}
        rows = []
        for r in self.rows():
            code, run_id = written[r["trial_id"]]
            row = {k: v for k, v in r.items()
                   if k not in ("traceback", "history") and (curves or k not in NESTED)}
            rows.append({**row, "code_version": row.get("code_version") or code,
                         "experiment": row.get("experiment") or experiments.get(run_id)})
        df = pd.DataFrame(rows)
        for column in COLUMNS:
            if column not in df:
                df[column] = None
        return df[list(COLUMNS) + sorted(c for c in df.columns if c not in COLUMNS)]

    def put_evaluation(self, row: dict[str, Any]) -> None:
        """Insert or replace the evaluation of ``row['trial_id']``'s model on the dataset ``row['fingerprint']``
        (:mod:`etlbench.evaluate`); the trial's own row is never changed."""
        with self._db:
            self._db.execute(
                "INSERT INTO evaluations (trial_id, fingerprint, dataset, updated_at, row, code_version) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(trial_id, fingerprint) DO UPDATE SET "
                "dataset = excluded.dataset, updated_at = excluded.updated_at, row = excluded.row, "
                "code_version = excluded.code_version",
                (row["trial_id"], row["fingerprint"], row.get("dataset"), time.time(), _dumps(row),
                 row.get("code_version")))

    def evaluations(self) -> pd.DataFrame:
        """Every cross-dataset evaluation, one row per trial and dataset (empty for a database without any)."""
        import pandas as pd

        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = [] if "evaluations" not in tables else \
            [json.loads(r) for (r,) in self._db.execute("SELECT row FROM evaluations ORDER BY updated_at")]
        return pd.DataFrame(rows, columns=None if rows else ["trial_id", "fingerprint", "dataset"])

    def export_csv(self, path: str | Path) -> Path:
        path = Path(path)
        self.frame().to_csv(path, index=False)
        return path


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
