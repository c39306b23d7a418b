"""Show that two versions of etlbench's code compute the same numbers, on one machine.

Training is deterministic for a seed on one CPU with a fixed thread count, but not across CPUs (other SIMD
kernels change the last bits, and SGD amplifies them), so stored rows of another machine cannot be re-checked
here; two code versions can. Run once per version (the other one through PYTHONPATH), then compare:

    git archive af1a7fb etlbench | tar -x -C /tmp/old
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/old python tools/compare_code.py run SPEC.yaml old.json
    OMP_NUM_THREADS=1 python tools/compare_code.py run SPEC.yaml new.json
    python tools/compare_code.py diff old.json new.json

``run`` trains every trial of the spec in this process (one torch thread, like a Ray worker of one CPU, whose
BLAS pools Ray limits with OMP_NUM_THREADS) and writes the fields that the code computes; it understands the
trial API of before and after the identity redesign. ``diff`` exits 1 unless every field is equal.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

SHAPED = ("status", "metric", "val_metric", "baseline_metric", "linear_probe_metric", "samples_seen",
          "recovery_steps", "recovery_best_samples", "cut_layer", "kept_fraction", "probe_cut_score",
          "probe_strength", "start_cost_samples")


def _trials(spec_file: str) -> list[Any]:
    from etlbench import config

    spec = config.load_spec(path=spec_file)
    if hasattr(spec, "trials"):  # before the redesign: the spec expanded itself
        return spec.trials()
    from etlbench.plan import plan

    return plan(spec)


def run(spec_file: str, out: str) -> int:
    import etlbench
    from etlbench.trial import train_trial

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as cache:
        for t in _trials(spec_file):
            name = f"{t.task}:{t.method}:{t.compression}:{t.seed}"
            fields, _ = train_trial(t, cache)
            results[name] = {k: fields.get(k) for k in SHAPED}
            print(name, results[name]["status"], results[name]["metric"], flush=True)
    Path(out).write_text(json.dumps({"package": str(Path(etlbench.__file__).parent), "trials": results}, indent=1))
    return 0


def diff(a: str, b: str) -> int:
    left, right = (json.loads(Path(p).read_text())["trials"] for p in (a, b))
    bad = 0
    for name in sorted(left.keys() | right.keys()):
        changes = {k: (left.get(name, {}).get(k), right.get(name, {}).get(k)) for k in SHAPED}
        changes = {k: v for k, v in changes.items() if v[0] != v[1]}
        bad += bool(changes)
        print(f"{name}: {changes or 'identical'}")
    print(f"{len(left)} and {len(right)} trials; {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    sys.exit(run(*args) if command == "run" else diff(*args))
