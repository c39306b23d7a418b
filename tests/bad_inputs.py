"""Every kind of bad input a user can give etlbench, with the one-line error each must get (issue 14).

Each case writes its hostile or malformed files itself into a folder, runs one command line and expects exit 2
and one ``etlbench: error:`` line that holds the given fragments (the file, key or option, and what was
expected), never a traceback and never a hint to load unsafely. ``tests/test_bad_input.py`` runs them in
process; run this file to print the table of exit codes and messages (``--old PATH`` runs another checkout of
the package instead, for a before/after comparison)::

    python tests/bad_inputs.py [--old /tmp/old]
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UNSAFE_HINTS = ("allow_pickle", "weights_only=False", "Traceback")


def tiny_npz(path: Path, size: int = 20, n: int = 12) -> Path:
    """A valid canonical dataset of ``n`` random ``size`` px faces with head-pose, age and gender labels."""
    rng = np.random.default_rng(0)
    np.savez_compressed(path, images=rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
                        split=np.arange(n, dtype=np.int64) % 3, pose=rng.normal(0, 20, (n, 3)).astype(np.float32),
                        age=rng.integers(1, 80, n).astype(np.float32), gender=rng.integers(0, 2, n))
    return path


def huge_header_npz(path: Path) -> Path:
    """An npz whose ``images`` header declares a 2.7 TiB array over a body of a few bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (3_000_000, 1000, 1000, 1)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("images.npy", header.getvalue() + b"\0" * 64)
        z.writestr("split.npy", _npy(np.zeros(3, dtype=np.int64)))
    return path


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


class _Gadget:
    """A pickled object whose loading would call a function: what ``weights_only`` exists to refuse."""

    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def pickle_weights(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"state_dict": _Gadget()}))
    return path


BASE_SPEC = "tasks: [gender]\nmethods: [magnitude]\ncompressions: [2]\n"


def torch_save(obj: object, path: Path) -> None:
    import torch

    torch.save(obj, path)


def spec(text: str) -> Callable[[Path], object]:
    """A setup that writes ``spec.yaml``: a valid spec, then ``text`` (a key given again replaces the first)."""
    return lambda d: (d / "spec.yaml").write_text(BASE_SPEC + text)


@dataclass(frozen=True)
class Case:
    """A command line (``{d}`` is the case's folder) after ``setup`` wrote its files; the error must hold
    ``expect`` and exit with ``code`` (2: the input's fault)."""

    name: str
    argv: tuple[str, ...]
    expect: tuple[str, ...]
    setup: Callable[[Path], object] = lambda d: None
    code: int = 2


def prune(*extra: str, method: str = "magnitude", compression: str = "2") -> tuple[str, ...]:
    return ("prune", "--task", "gender", "--method", method, "--compression", compression, "--cache", "{d}/cache",
            *extra)



RUN = ("run", "--out", "{d}/out", "--config", "{d}/spec.yaml")


def empty_results(folder: Path) -> None:
    """An etlbench results database with its tables and no trials."""
    from etlbench.results import ResultsStore

    ResultsStore(folder / "results.sqlite").close()

CASES: tuple[Case, ...] = (
    Case("prune --compression 0", prune(compression="0"), ("--compression", "0", "at least 1")),
    Case("prune --compression abc", prune(compression="abc"), ("--compression", "abc")),
    Case("prune --compression nan", prune(compression="nan"), ("--compression", "nan")),
    Case("prune --compression 1e300", prune(compression="1e300"), ("--compression", "1e+300")),
    Case("prune --param epsilon=abc", prune("--param", "epsilon=abc", method="etl"),
         ("epsilon", "'abc'", "finite number")),
    Case("prune --param policy=foo", prune("--param", "policy=foo"), ("policy", "'foo'", "'global'")),
    Case("prune --param nokey=1", prune("--param", "nokey=1"), ("nokey", "takes")),
    Case("prune --param without =", prune("--param", "epsilon"), ("--param", "KEY=VALUE")),
    Case("prune --threads 1.5", prune("--threads", "1.5"), ("--threads", "1.5", "integer")),
    Case("prune --recovery-samples -5", prune("--recovery-samples", "-5"), ("--recovery-samples", "-5")),
    Case("prune --input-size 8", prune("--input-size", "8"), ("--input-size", "8", "16")),
    Case("prune --precision fp16", prune("--precision", "fp16"), ("precision", "'fp16'", "'fp32'", "'bf16'")),
    Case("transfer --samples 0", ("transfer", "--task", "gender", "--samples", "0", "--out", "{d}/t"),
         ("--samples", "0")),
    Case("transfer --lr -1", ("transfer", "--task", "gender", "--lr", "-1", "--out", "{d}/t"), ("--lr", "-1")),
    Case("prune on a 0-byte npz", prune("--dataset", "{d}/empty.npz"), ("empty.npz", "npz"),
         lambda d: (d / "empty.npz").write_bytes(b"")),
    Case("prune on a text file named .npz", prune("--dataset", "{d}/text.npz"), ("text.npz", "npz"),
         lambda d: (d / "text.npz").write_text("images,split\n1,2\n")),
    Case("prune on an npz declaring 2.7 TiB", prune("--dataset", "{d}/huge.npz"), ("huge.npz", "images"),
         lambda d: huge_header_npz(d / "huge.npz")),
    Case("prune on 2x2-pixel images", prune("--dataset", "{d}/tiny.npz"), ("tiny.npz", "2x2"),
         lambda d: tiny_npz(d / "tiny.npz", size=2)),
    Case("mobilefacenet weights that are a pickle",
         ("transfer", "--task", "gender", "--backbone", "mobilefacenet", "--backbone-weights", "{d}/evil.pt",
          "--out", "{d}/t"), ("evil.pt",), lambda d: pickle_weights(d / "evil.pt")),
    Case("run --out naming a file", ("run", "--preset", "smoke", "--out", "{d}/file"), ("file", "folder"),
         lambda d: (d / "file").write_text("x")),
    Case("run --workers 0", ("run", "--preset", "smoke", "--out", "{d}/o", "--workers", "0"), ("--workers", "0")),
    Case("run --measure-only on a new folder", ("run", "--preset", "smoke", "--out", "{d}/new", "--measure-only"),
         ("--measure-only", "new", "results.sqlite", "earlier run")),
    Case("spec: compressions a scalar", RUN, ("compressions", "list"),
         spec("compressions: 4\n")),
    Case("spec: compression .nan", RUN, ("compressions[1]", "nan"), spec("compressions: [2, .nan]\n")),
    Case("spec: compression 1e300", RUN, ("compressions[1]", "1e+300"), spec("compressions: [2, 1.0e+300]\n")),
    Case("spec: seeds []", RUN, ("seeds", "[]"), spec("seeds: []\n")),
    Case("spec: seeds [-1]", RUN, ("seeds", "-1"), spec("seeds: [-1]\n")),
    Case("spec: compressions as text", RUN, ("compressions[0]", "'4'"), spec("compressions: ['4']\n")),
    Case("spec: lr written 1e-3 (YAML text)", RUN, ("recovery.lr", "'1e-3'", "1.0e-3"), spec("recovery: {lr: 1e-3}\n")),
    Case("spec: a task name that is a number", RUN, ("tasks.5", "task name"), spec("tasks: {5: null}\n")),
    Case("spec: a method name that is a list", RUN, ("methods[0]", "['magnitude']"), spec("methods: [[magnitude]]\n")),
    Case("prune --param with bad YAML", prune("--param", "epsilon=[1"), ("--param", "epsilon=[1", "YAML")),
    Case("spec: method parameter of the wrong type", RUN, ("methods.etl.epsilon", "'abc'"),
         spec("methods: {etl: {epsilon: abc}}\n")),
    Case("spec: policy foo", RUN, ("methods.magnitude.policy", "'foo'"), spec("methods: {magnitude: {policy: foo}}\n")),
    Case("spec: recovery samples -5", RUN, ("recovery.samples", "-5"),
         spec("recovery: {samples: -5}\n")),
    Case("spec: recovery samples 'many'", RUN, ("recovery.samples", "'many'"),
         spec("recovery: {samples: many}\n")),
    Case("spec: transfer lr -0.1", RUN, ("transfer.lr", "-0.1"), spec("transfer: {lr: -0.1}\n")),
    Case("transfer: weights of another format", ("transfer", "--task", "gender", "--backbone", "mobilefacenet",
                                                  "--backbone-weights", "{d}/other.pt", "--out", "{d}/t"),
         ("other.pt", "'mobilefacenet' cannot be built"), lambda d: torch_save({"w": 1}, d / "other.pt")),
    Case("spec: transfer epochs 1.5", RUN, ("transfer.epochs", "1.5"),
         spec("transfer: {epochs: 1.5}\n")),
    Case("spec: threads 1.5", RUN, ("threads", "1.5"), spec("threads: 1.5\n")),
    Case("spec: measure threads 1.5", RUN, ("measure.threads", "1.5"),
         spec("measure: {threads: 1.5}\n")),
    Case("spec: measure batches [0]", RUN, ("measure.batches", "0"),
         spec("measure: {batches: [0]}\n")),
    Case("spec: name a list", RUN, ("name", "string"), spec("name: [a]\n")),
    Case("spec: not YAML", RUN, ("spec.yaml", "YAML"), lambda d: (d / "spec.yaml").write_text("tasks: [a\n")),
    Case("spec: dataset file missing", RUN, ("tasks.gender.dataset", "nope.npz"),
         lambda d: (d / "spec.yaml").write_text("tasks: {gender: {dataset: nope.npz}}\nmethods: [magnitude]\n"
                                                "compressions: [2]\n")),
    Case("report: results.sqlite not a database", ("report", "{d}"), ("results.sqlite", "not an SQLite database"),
         lambda d: (d / "results.sqlite").write_text("hello")),
    Case("report: a database without etlbench's tables", ("report", "{d}"), ("results.sqlite", "trials"),
         lambda d: sqlite3.connect(d / "results.sqlite").execute("create table other (x)").connection.commit()),
    Case("report: no such folder", ("report", "{d}/missing"), ("missing",)),
    Case("evaluate: no results database", ("evaluate", "{d}", "--dataset", "{d}/x.npz"),
         ("results.sqlite", "no results database")),
    Case("evaluate: dataset file missing", ("evaluate", "{d}", "--dataset", "{d}/nope.npz"), ("nope.npz", "not found"),
         lambda d: empty_results(d)),
    Case("evaluate: a run without stored models", ("evaluate", "{d}", "--dataset", "{d}/t.npz"),
         ("no stored models",), lambda d: (empty_results(d), tiny_npz(d / "t.npz"))),
    Case("spec: also_test without the task's labels", RUN,
         ("tasks.gender.also_test[0]", "missing label array 'gender'"),
         lambda d: (np.savez(d / "ages.npz", images=np.zeros((2, 16, 16, 1), np.uint8), age=np.ones(2)),
                    (d / "spec.yaml").write_text(f"tasks: {{gender: {{also_test: [{d / 'ages.npz'}]}}}}\n"
                                                 "methods: [magnitude]\ncompressions: [2]\n"))),
    Case("spec: also_test with an emotion class that has no counterpart", RUN, ("also_test[0]", "contempt"),
         lambda d: (np.savez(d / "emo.npz", images=np.zeros((2, 16, 16, 1), np.uint8), label=np.array([0, 1]),
                             class_names=np.array(["happy", "contempt"])),
                    (d / "spec.yaml").write_text(f"tasks: {{emotion: {{also_test: [{d / 'emo.npz'}]}}}}\n"
                                                 "methods: [magnitude]\ncompressions: [2]\n"))),
    Case("list datasets with a bad file in the root", ("list", "datasets", "--data-root", "{d}/root"),
         ("fer2013", "invalid", "fer2013_48.npz"),
         lambda d: ((d / "root/fer2013").mkdir(parents=True), (d / "root/fer2013/fer2013_48.npz").write_bytes(b"")),
         code=0),
)


def run_case(case: Case, folder: Path, command: list[str] | None = None, timeout: float = 120) -> tuple[int, str]:
    """Set up ``case`` in ``folder``, run it (``command``: a command line prefix, else ``etlbench`` in a fresh
    process, stopped after ``timeout`` seconds) and return the exit code and what it printed to stderr (stdout
    too, for ``list``)."""
    folder.mkdir(parents=True, exist_ok=True)
    case.setup(folder)
    argv = [a.replace("{d}", str(folder)) for a in case.argv]
    env = {k: v for k, v in os.environ.items() if k != "ETLBENCH_DATA"}
    try:
        done = subprocess.run([*(command or [sys.executable, "-m", "etlbench.cli"]), *argv], capture_output=True,
                              text=True, env=env, timeout=timeout, cwd=folder)  # not the checkout: PYTHONPATH decides
    except subprocess.TimeoutExpired:
        return -1, f"accepted: still running after {timeout:.0f} s"
    return done.returncode, (done.stderr + done.stdout if case.code == 0 else done.stderr).strip()


def _table(old: str | None, timeout: float) -> None:
    import tempfile

    print("| input | before | after |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(CASES):
            cells = []
            for j, path in enumerate([old, None] if old else [None]):
                env_cmd = ["env", f"PYTHONPATH={path}", sys.executable, "-m", "etlbench.cli"] if path else None
                code, text = run_case(case, Path(tmp) / f"{i}-{j}", env_cmd, timeout)
                lines = text.splitlines()
                shown = (f"{len(lines)}-line traceback: {lines[-1][:150]}" if "Traceback" in text
                         else " / ".join(lines)[:240])
                cells.append(f"exit {code}: `{shown}`".replace("|", "\\|"))
            print(f"| {case.name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="a folder holding another version of the etlbench package (the 'before')")
    parser.add_argument("--timeout", type=float, default=30, help="seconds after which a case counts as accepted")
    args = parser.parse_args()
    _table(args.old, args.timeout)
