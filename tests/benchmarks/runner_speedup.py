"""Speedup of an experiment's trial stage with N Ray workers over 1, with the same results (issue 4).

Run the same experiment twice from a cold start into two folders, e.g. on an otherwise idle machine::

    etlbench run --preset quick --out runs/quick-w2 --workers 2
    etlbench run --preset quick --out runs/quick-w1 --workers 1 --train-only
    python tests/benchmarks/runner_speedup.py runs/quick-w1 runs/quick-w2

The trial stage is everything that runs on Ray (shared stages and trials, from the first submission to the
last stored row); measurement runs alone afterwards and is not compared. Prints both trial-stage times, the
speedup, the runner's overhead per trial, and whether every trial's test metric is identical in both runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from etlbench.results import ResultsStore


def _trial_run(out: Path) -> tuple[dict[str, Any], dict[str, float | None]]:
    """The summary of the run that trained the trials in ``out``, and each trial's test metric."""
    with ResultsStore(out / "results.sqlite") as store:
        runs = [r for r in store.runs() if r["summary"] and r["summary"]["trained"]]
        if len(runs) != 1:
            raise SystemExit(f"{out}: expected one run that trained the trials, found {len(runs)}")
        return runs[0]["summary"] | {"workers": runs[0]["environment"]["workers"]}, {
            r["trial_id"]: r.get("metric") for r in store.rows()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("one", type=Path, help="the run with 1 worker")
    parser.add_argument("many", type=Path, help="the run with N workers")
    args = parser.parse_args()
    (s1, m1), (sn, mn) = _trial_run(args.one), _trial_run(args.many)
    t1, tn = s1["trial_stage_seconds"], sn["trial_stage_seconds"]
    differing = sorted(k for k in m1.keys() | mn.keys() if m1.get(k) != mn.get(k))
    report = {"trials": len(m1), "workers": [s1["workers"], sn["workers"]], "trial_stage_seconds": [t1, tn],
              "speedup": t1 / tn, "identical_metrics": not differing, "differing": differing,
              "busy_seconds_per_trial": [s["trial_busy_seconds"] / max(s["trained"], 1) for s in (s1, sn)],
              "return_latency_ms": [1000 * s["return_latency_seconds"] for s in (s1, sn)],
              "store_ms_per_trial": [1000 * s["store_seconds"] / max(s["trained"], 1) for s in (s1, sn)]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
