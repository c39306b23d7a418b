"""Re-key a results database written before etlbench's identity redesign, where that is shown to be safe.

Rows written by older code carry trial ids of the old identity (a hash of every package file). They may be
re-keyed to today's ids only where today's results-shaping code computes the same numbers; show that first with
tools/compare_code.py (the old and today's code on the same trials, on one machine: training is deterministic
on one CPU and thread count, not across CPUs, so stored rows of another machine cannot be re-run bit for bit).
Then:

    python tools/migrate_results.py DIR --preset NAME --code OLD_VERSION [--backbone NAME]

matches every stored row of the preset's experiment and code OLD_VERSION to the trial of today's plan with the
same task, method, compression and seed, checks that the stored spec equals the planned one field by field
(fields added since only at the old behaviour), and rewrites the row under today's trial id, code version and
experiment name, in one transaction (a model file of the run moves to its new name). Latencies are measurements:
kept as measured.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from etlbench.config import load_spec
from etlbench.identity import canonical, code_version
from etlbench.plan import plan
from etlbench.results import ResultsStore
from etlbench.trial import TrialSpec


def _stored(db: sqlite3.Connection, experiment: str) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """Id, code version (the spec's, in the old layout, else the column's), spec and row of every row of one
    experiment (a folder may hold several, e.g. reference and reference-distill)."""
    return [(tid, json.loads(spec).get("code_version") or code, json.loads(spec), json.loads(row))
            for tid, code, spec, row in db.execute("SELECT trial_id, code_version, spec, row FROM trials "
                                                   "WHERE experiment = ?", (experiment,))]


def _point(spec: dict[str, Any]) -> tuple:
    where = spec.get("setting", spec)  # today's layout nests the setting; the old one was flat
    return where["task"], spec["method"], spec["compression"], where["seed"]


def _restrict(planned: Any, stored: Any) -> Any:
    """``planned`` with only the keys that ``stored`` has, at every depth (fields added since are not compared)."""
    if isinstance(planned, dict) and isinstance(stored, dict):
        return {k: _restrict(planned.get(k), v) for k, v in stored.items()}
    return planned


def _old_view(t: TrialSpec) -> dict[str, Any]:
    """Today's planned spec in the old flat layout (setting fields at the top, transfer recipe as 'transfer')."""
    new, s = canonical(t), t.setting
    new.pop("setting")
    new.update({k: getattr(s, k) for k in ("task", "dataset", "backbone", "backbone_weights", "input_size",
                                           "max_train", "seed", "device", "threads")}, transfer=canonical(s.train))
    return new


def _differences(old: dict[str, Any], t: TrialSpec) -> list[str]:
    new, out = canonical(t) if "setting" in old else _old_view(t), []
    for key, value in old.items():
        if key in ("code_version", "data_root"):
            continue
        planned = json.loads(json.dumps(_restrict(new.get(key), value), default=str))
        if planned != value:
            out.append(f"{key}: stored {value!r}, planned {planned!r}")
    return out


def migrate(out: Path, preset: str, old_code: str, backbone: str | None = None) -> int:
    spec = load_spec(preset, backbone=backbone)
    trials = {(t.task, t.method, t.compression, t.seed): t for t in plan(spec)}
    ResultsStore(out / "results.sqlite").close()  # today's schema (the columns rows are scoped by)
    db = sqlite3.connect(out / "results.sqlite")
    updates, problems, moves = [], [], []
    stored = _stored(db, spec.name)
    if not stored:
        print(f"{out}: no rows of experiment {spec.name!r} to migrate", file=sys.stderr)
        return 1
    for tid, stored_code, old, row in stored:
        if (stored_code or "").split("+")[-1] != old_code.split("+")[-1]:
            problems.append(f"{tid}: code {stored_code}, not {old_code}")
            continue
        t = trials.get(_point(old))
        diffs = ["not in today's plan"] if t is None else _differences(old, t)
        if diffs:
            problems.append(f"{tid} {_point(old)}: {'; '.join(diffs)}")
            continue
        new_id = t.trial_id()
        row.update(trial_id=new_id, code_version=code_version(), experiment=spec.name,
                   data_fingerprint=t.setting.data_fingerprint, migrated_from=f"{tid} (code {stored_code})")
        if "model_file" in row:  # a model file of the run moves to its new name with its row
            old_file, row["model_file"] = out / row["model_file"], f"models/{new_id}.pt"
            if old_file.is_file():
                moves.append((old_file, out / row["model_file"]))
        updates.append((new_id, json.dumps(canonical(t), sort_keys=True, default=str),
                        json.dumps(row, sort_keys=True, default=str), code_version(), spec.name, row["backbone"], tid))
    if problems:
        print("not migrated; these rows do not match today's plan:\n" + "\n".join(problems), file=sys.stderr)
        return 1
    with db:  # the trials, and the evaluations of their models on other datasets (etlbench evaluate)
        db.executemany("UPDATE trials SET trial_id = ?, spec = ?, row = ?, code_version = ?, experiment = ?, "
                       "backbone = ? WHERE trial_id = ?", updates)
        for new_id, *_, tid in updates:
            for fingerprint, text in db.execute("SELECT fingerprint, row FROM evaluations WHERE trial_id = ?",
                                                (tid,)).fetchall():
                db.execute("UPDATE evaluations SET trial_id = ?, row = ? WHERE trial_id = ? AND fingerprint = ?",
                           (new_id, json.dumps({**json.loads(text), "trial_id": new_id}, sort_keys=True), tid,
                            fingerprint))
    for old_file, new_file in moves:  # only once every row matched
        old_file.rename(new_file)
    db.execute("VACUUM")
    print(f"{out}: {len(updates)} rows re-keyed from code {old_code} to code {code_version()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--code", required=True, help="the stored rows' code version")
    parser.add_argument("--backbone", help="the backbone the preset was run on, as etlbench run --backbone")
    args = parser.parse_args(argv)
    return migrate(args.dir, args.preset, args.code, args.backbone)


if __name__ == "__main__":
    sys.exit(main())
