"""Run an experiment on Ray (docs/design.md): shared stages once, trials in parallel, measurement alone.

1. **Plan and check** (driver, before anything long): expand the spec into trials (:func:`etlbench.plan.plan`),
   drop those the database already holds as final (``--resume``), load each task's data once (a bad dataset fails
   here).
2. **Shared stages** (Ray tasks): the transfer baseline per task and seed, then each method's
   :meth:`~etlbench.methods.PruningMethod.shared_stage` (ETL's probes) per task and seed; both are cached under
   ``DIR/cache`` and the trials wait for them. Each task's data is in the object store once, passed by reference.
3. **Trials** (Ray tasks, ``threads`` CPUs each, at most ``workers`` at once): prune, recover, evaluate on test,
   save the pruned model under ``DIR/models``; the driver stores each row (status ``trained``) as it ends. A trial
   that raises becomes a ``failed`` row; a worker that dies is retried by Ray.
4. **Measurement** (driver, after Ray has stopped, so it has the machine to itself): each transfer baseline once,
   then every trained model, under the spec's measurement settings; rows become ``ok``.
5. **Outputs**: ``results.csv`` (the columns of docs/design.md) and the report (``leaderboard.md``...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import os
import platform
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import ray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import etlbench
from etlbench import measure
from etlbench.data import TaskData
from etlbench.errors import RunInterrupted, RunnerError
from etlbench.evaluate import evaluate_run
from etlbench.identity import RESULTS_LIBRARIES, code_version
from etlbench.methods import METHODS, PruningMethod
from etlbench.model_io import save_pruned
from etlbench.plan import ExperimentSpec, plan
from etlbench.report import write_report
from etlbench.results import FINAL, ResultsStore, failed_row, failure
from etlbench.trial import (
    MeasurePass,
    TrialSpec,
    baseline_model,
    load_pruned_model,
    shared_stage,
    trained_row,
)


@dataclasses.dataclass
class RunSummary:
    """What a run did and how long each stage took (seconds of wall-clock time)."""

    out: str
    planned: int
    skipped: int  # already final in the database (resume)
    trained: int  # trial stages run
    measured: int
    statuses: dict[str, int]
    workers: int
    threads: int
    wall_seconds: float = 0.0
    check_seconds: float = 0.0
    ray_start_seconds: float = 0.0
    trial_stage_seconds: float = 0.0  # shared stages and trials, from the first submission to the last row
    measure_seconds: float = 0.0
    trial_busy_seconds: float = 0.0  # the trials' own time inside their Ray tasks
    shared_busy_seconds: float = 0.0
    store_seconds: float = 0.0  # writing rows to the database
    return_latency_seconds: float = 0.0  # mean time from a trial's end in its worker to its row being stored
    idle_wait_seconds: float = 0.0  # waited before measuring, for the machine to become idle
    busy_cores_before_measure: float = float("nan")  # cores busy (all processes) just before measuring
    measured_busy: bool = False  # the machine never became idle: the latencies are indicative only


def _shares(t: TrialSpec) -> bool:
    """Whether the trial's method has a shared stage (it overrides :meth:`PruningMethod.shared_stage`)."""
    return METHODS.get(t.method).shared_stage is not PruningMethod.shared_stage


def _shared_key(t: TrialSpec) -> tuple:
    """Trials with equal keys share one method stage: the same method, parameters and setting."""
    return (t.method, repr(sorted(t.method_params.items())), t.setting.key())


# ---- Ray tasks (plain functions; wrapped with ray.remote when a run starts) -------------------------------
def check_code(driver_code: str) -> None:
    """A worker must run the driver's code: trial ids include the code version, and results of other code would
    be stored as this experiment's. (A Ray worker puts the driver's working directory first on its path, so a
    checkout there shadows the package the driver imported; a cluster node may have another version installed.)"""
    if code_version() != driver_code:
        raise RunnerError(f"this Ray worker runs etlbench {code_version()} from {Path(etlbench.__file__).parent}, "
                          f"the driver {driver_code}: every node must import the driver's etlbench (start the "
                          f"driver where its working directory does not hold another etlbench/ folder)")


def _stage_task(stage: Callable[..., Any], t: TrialSpec, data: TaskData, cache: str, code: str, *_deps: float) -> float:
    """Run a shared stage (``baseline_model`` or ``shared_stage``) after its dependencies; its seconds."""
    check_code(code)
    start = time.perf_counter()
    stage(t, cache, data)
    return time.perf_counter() - start


def _trial_task(t: TrialSpec, data: TaskData, cache: str, models: str, tracker: Any, code: str,
                *_deps: float) -> dict[str, Any]:
    check_code(code)
    tracker.started.remote(t.trial_id())
    start = time.perf_counter()
    row, model = trained_row(t, cache, data)
    if model is not None:
        path = Path(models) / f"{row['trial_id']}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_pruned(model, str(path), meta={"trial_id": row["trial_id"], "cut_layer": row.get("cut_layer")})
        row["model_file"] = str(path.relative_to(Path(models).parent))
    row.update(trial_seconds=time.perf_counter() - start, worker_pid=os.getpid(), ended_at=time.time())
    return row


class _Tracker:
    """Which trials are running (a Ray actor the trials report their start to), for the progress display."""

    def __init__(self) -> None:
        self.running: set[str] = set()

    def started(self, trial_id: str) -> None:
        self.running.add(trial_id)

    def ended(self, trial_id: str) -> None:
        self.running.discard(trial_id)

    def count(self) -> int:
        return len(self.running)


def environment(workers: int, threads: int, address: str | None) -> dict[str, Any]:
    """The conditions of a run: machine, versions, parallelism."""
    libraries = {name: importlib.metadata.version(name) for name in ("numpy", *RESULTS_LIBRARIES)}
    return {**libraries, **measure.machine_info(), "host": socket.gethostname(), "python": platform.python_version(),
            "ray": ray.__version__, "etlbench": code_version(), "workers": workers, "threads_per_trial": threads,
            "ray_address": address or "local"}


def _row_line(row: dict[str, Any]) -> str:
    c = "auto" if row.get("compression") is None else f"{row['compression']:g}x"
    head = f"{row['task']} {row['method']} {c} seed {row['seed']}: {row['status']}"
    if row["status"] in ("failed", "infeasible"):
        return f"{head} ({row.get('error', '')})"
    quality = f"{row['metric_name']} {row['metric']:.4g}, retention {row['retention']:.3f}"
    if row["status"] == "ok":
        latency = f", latency {-row['latency_reduction']:+.0%} (b1)" if "latency_reduction" in row else ""
        return f"{head}: {quality}, {row['compression_achieved']:.2f}x params{latency}"
    return f"{head}: {quality} in {row.get('trial_seconds', 0):.0f} s"


def bf16_is_emulated() -> bool:
    """Whether bfloat16 autocast runs without native instructions on this machine's CPU: an x86 CPU without
    AVX512-BF16 or AMX (torch's own checks; elsewhere, or where torch lacks them: not known, so False)."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    checks = [check for check in checks if check is not None]
    return platform.machine().lower() in ("x86_64", "amd64") and bool(checks) and not any(c() for c in checks)


def precision_warning(spec: ExperimentSpec) -> str | None:
    """A warning where ``spec`` trains on this CPU under bf16 autocast that the CPU can only emulate: on an AVX2
    AMD EPYC a training step of dlib-resnet29 ran 17x slower than in fp32 (docs/recipe-search/README.md), so a
    preset's compute plan, made on a CPU with AVX512-BF16, does not hold there."""
    keys = [f"{name}.precision" for name, cfg in (("transfer", spec.transfer), ("recovery", spec.recovery))
            if cfg.precision == "bf16"]
    if not keys or spec.gpus > 0 or not bf16_is_emulated():
        return None
    named = " and ".join(keys)
    return (f"warning: {named} train under bf16 autocast, which this CPU (no AVX512-BF16 or AMX) only emulates: "
            f"training runs many times slower than in fp32 (17x on an AVX2 machine, docs/recipe-search/README.md) "
            f"and the presets' compute plans do not hold; set {named} to fp32 in a spec to train in fp32 here "
            f"(other trials, with their own ids)")


def local_warnings(spec: ExperimentSpec, workers: int, cores: float) -> list[str]:
    """What about this machine makes ``spec`` run slower than planned: oversubscribed cores, emulated bf16."""
    warnings = [f"warning: {workers} workers x {spec.threads} threads oversubscribe the {cores} usable cores"] \
        if workers * spec.threads > int(cores) else []
    return warnings + [w for w in [precision_warning(spec)] if w]


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """A cluster address must answer now: ``ray.init`` would retry it for minutes before giving up."""
    if address in (None, "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RunnerError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise RunnerError(f"--address {address}: nothing answers there ({err}); is the cluster's head started "
                          f"(`ray start --head`), and is this its GCS address?") from err


@contextlib.contextmanager
def _cancel_on_interrupt(pending: dict[ray.ObjectRef, TrialSpec]) -> Iterator[None]:
    """On Ctrl-C, stop the trials still running or queued (their workers are killed) before Ray shuts down."""
    try:
        yield
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


@dataclasses.dataclass
class Run:
    """One sitting of an experiment: the driver's state that the trial and measurement stages share."""

    spec: ExperimentSpec
    out: Path
    store: ResultsStore
    run_id: int
    data: dict[tuple, TaskData]
    summary: RunSummary
    console: Console
    show_progress: bool

    @property
    def cache(self) -> Path:
        return self.out / "cache"

    def put(self, t: TrialSpec, row: dict[str, Any]) -> None:
        """Store ``row`` of trial ``t`` in one transaction, stamped with this run and experiment."""
        start = time.perf_counter()
        self.store.put(row, t, self.run_id, self.spec.name)
        self.summary.store_seconds += time.perf_counter() - start

    def progress(self) -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("running {task.fields[running]}  failed {task.fields[failed]}"),
                        TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=self.console,
                        disable=not self.show_progress)

    # ---- 2 and 3: shared stages and trials on Ray ---------------------------------------------------------
    def train(self, trials: list[TrialSpec], address: str | None) -> None:
        start = time.perf_counter()
        started_here = not ray.is_initialized()
        if started_here:
            local = {} if address else {"num_cpus": self.summary.workers * self.spec.threads,
                                        "include_dashboard": False}
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False, **local)
            except (ConnectionError, RuntimeError) as err:
                raise RunnerError(f"cannot {'join the Ray cluster at ' + address if address else 'start a local Ray'}:"
                                  f" {str(err).strip().splitlines()[-1]} (a cluster with token authentication needs "
                                  f"its token in RAY_AUTH_TOKEN or ~/.ray/auth_token)") from err
        self.summary.ray_start_seconds = time.perf_counter() - start
        try:
            self._collect(self._submit(trials))
        finally:
            if started_here:
                ray.shutdown()

    def _submit(self, trials: list[TrialSpec]) -> tuple[dict[ray.ObjectRef, TrialSpec], list[ray.ObjectRef], Any]:
        """Submit each setting's baseline stage, each method's shared stage and every trial after its stages."""
        options = {"num_cpus": self.spec.threads, "num_gpus": self.spec.gpus}
        stage = ray.remote(_stage_task).options(**options, max_retries=2)
        trial = ray.remote(_trial_task).options(**options, max_retries=2)
        tracker = ray.remote(_Tracker).options(num_cpus=0).remote()
        code, cache, models = code_version(), str(self.cache), str(self.out / "models")
        data_refs = {k: ray.put(self.data[k].portable()) for k in {t.setting.data_key for t in trials}}
        stages: dict[Any, ray.ObjectRef] = {}
        pending: dict[ray.ObjectRef, TrialSpec] = {}
        for t in trials:
            d, base_key = data_refs[t.setting.data_key], t.setting.key()
            if base_key not in stages:
                stages[base_key] = stage.remote(baseline_model, t, d, cache, code)
            deps = [stages[base_key]]
            if _shares(t):
                key = _shared_key(t)
                if key not in stages:
                    stages[key] = stage.remote(shared_stage, t, d, cache, code, stages[base_key])
                deps.append(stages[key])
            pending[trial.remote(t, d, cache, models, tracker, code, *deps)] = t
        return pending, list(stages.values()), tracker

    def _collect(self, submitted: tuple[dict[ray.ObjectRef, TrialSpec], list[ray.ObjectRef], Any]) -> None:
        """Store each trial's row as it ends; then add up the shared stages' work."""
        pending, stages, tracker = submitted
        start, total, failed, returned = time.perf_counter(), len(pending), 0, 0
        with self.progress() as progress, _cancel_on_interrupt(pending):
            bar = progress.add_task("trials", total=total, running=0, failed=0)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    t = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except Exception as err:  # the worker died or the task could not run: a failed row says why
                        row = failed_row(t, err)
                    received = time.time()
                    tracker.ended.remote(t.trial_id())
                    self.put(t, row)
                    if "ended_at" in row:
                        self.summary.return_latency_seconds += received - row["ended_at"]
                        self.summary.trial_busy_seconds += row["trial_seconds"]
                        returned += 1
                    failed += row["status"] == "failed"
                    progress.console.print(_row_line(row))
                progress.update(bar, completed=total - len(pending), running=ray.get(tracker.count.remote()),
                                failed=failed)
        self.summary.return_latency_seconds /= max(returned, 1)
        for ref in stages:
            try:
                self.summary.shared_busy_seconds += ray.get(ref)
            except Exception:  # a failed stage: the trials that needed it failed and say why
                continue
        self.summary.trial_stage_seconds = time.perf_counter() - start

    # ---- 4: measurement, alone --------------------------------------------------------------------------
    def measure(self, trials: list[TrialSpec]) -> None:
        """Measure every trained model, one at a time in this process, grouped by setting, each between two
        timings of its transfer baseline (:class:`~etlbench.trial.MeasurePass`)."""
        start = time.perf_counter()
        if trials:
            self._wait_until_idle(trials[0].measure.idle_wait)
        rows = {r["trial_id"]: r for r in self.store.rows(ids=[t.trial_id() for t in trials])}
        measure_next = MeasurePass(lambda t: baseline_model(t, self.cache, self.data[t.setting.data_key]))
        with self.progress() as progress:
            bar = progress.add_task("measuring", total=len(trials), running=1 if trials else 0, failed=0)
            for t in sorted(trials, key=lambda t: t.setting.key()):  # stable: plan order within a setting
                row, data = rows[t.trial_id()], self.data[t.setting.data_key]
                try:
                    model = load_pruned_model(t, row, self.out / row["model_file"], data)
                    row.update(measure_next(t, model, tuple(row["input_size"])))
                except Exception as err:  # the row says why; the other models are still measured
                    row.update(failure(err))
                self.put(t, row)
                self.summary.measured += 1
                progress.console.print(_row_line(row))
                progress.advance(bar)
        self.summary.measure_seconds = time.perf_counter() - start

    def _wait_until_idle(self, max_wait: float) -> None:
        s = self.summary
        s.idle_wait_seconds, s.busy_cores_before_measure = measure.wait_until_idle(max_wait=max_wait)
        s.measured_busy = s.busy_cores_before_measure >= measure.IDLE_CORES  # NaN (unknown): not said busy
        if s.measured_busy:
            self.console.print(f"warning: the machine is busy ({s.busy_cores_before_measure:.2f} cores in use by other "
                               f"work after waiting {s.idle_wait_seconds:.0f} s): the latencies measured now are "
                               f"indicative only; measure again on an idle machine to cite them")


def _checked_out(out: Path, only: str | None) -> Path:
    """``out``: a folder, new or an earlier run's; an earlier run's to only measure."""
    if out.exists() and not out.is_dir():
        raise RunnerError(f"--out {out}: a file is there; expected a folder (a new one, or an earlier run's with "
                          f"--resume)")
    if only == "measure" and not (out / "results.sqlite").is_file():
        raise RunnerError(f"--measure-only: {out} holds no results.sqlite; expected the folder of an earlier run")
    return out


def _measurable(store: ResultsStore, by_id: dict[str, TrialSpec], out: Path) -> set[str]:
    """The trials of ``by_id`` stored as trained whose model file is there to measure."""
    return {r["trial_id"] for r in store.rows(status="trained")
            if r["trial_id"] in by_id and (out / r.get("model_file", "")).is_file()}


def run_experiment(spec: ExperimentSpec, out: str | Path, *, resume: bool = False, address: str | None = None,
                   workers: int | None = None, only: Literal["train", "measure"] | None = None,
                   show_progress: bool = True) -> RunSummary:
    """Run every trial of ``spec`` not yet final in ``out``/results.sqlite; write results.csv and the report.

    ``only="train"`` leaves the trained models unmeasured (status ``trained``) for a later ``resume``, e.g. on the
    machine whose latency the results should report. ``only="measure"`` (a resume) trains nothing: it measures
    the models already trained, e.g. of a long run stopped before its end, whose other trials stay to run."""
    wall = time.perf_counter()
    check_address(address)
    console = Console(stderr=True, soft_wrap=True)
    out = _checked_out(Path(out), only)
    cores = measure.machine_info()["usable_cores"]
    workers = workers or max(1, int(cores) // spec.threads)
    for warning in local_warnings(spec, workers, cores) if address is None else []:
        console.print(warning)
    trials = plan(spec)  # every dataset is read and fingerprinted here: a bad file fails before anything runs
    by_id = {t.trial_id(): t for t in trials}
    store = ResultsStore(out / "results.sqlite")
    train = only != "measure"
    try:
        stored = {k: v for k, v in store.statuses().items() if k in by_id}
        if stored and not resume and train:
            raise RunnerError(f"{out} already holds {len(stored)} trial(s) of this experiment; pass --resume to go "
                              f"on with it, or choose another --out")
        final = {k for k, v in stored.items() if v in FINAL}
        ready = _measurable(store, by_id, out)
        done = final | ready
        to_train = [t for tid, t in by_id.items() if tid not in done] if train else []
        summary = RunSummary(str(out), len(trials), len(final), len(to_train), 0, {}, workers, spec.threads)
        runs = (f"{len(to_train)} to run on {workers} worker(s) x {spec.threads} thread(s)" if train
                else f"{len(by_id) - len(done)} left to run (measuring only)")
        console.print(f"{spec.name}: {len(trials)} trials (code {code_version()}); {len(final)} already done, "
                      f"{len(ready)} to measure, {runs}")
        need = to_train + [by_id[tid] for tid in ready]
        data: dict[tuple, TaskData] = {}
        for t in need:  # each task's splits once; every bad input fails here, before any training
            if t.setting.data_key not in data:
                data[t.setting.data_key] = t.setting.load_data()
        run = Run(spec, out, store, store.start_run(dataclasses.asdict(spec), environment(workers, spec.threads,
                                                                                            address)),
                  data, summary, console, show_progress)
        summary.check_seconds = time.perf_counter() - wall
        try:
            if to_train:
                run.train(to_train, address)
            for task, datasets in spec.also_test.items():  # in the driver, before the measurement has the machine
                for dataset in datasets:
                    evaluate_run(out, dataset, task=task, data_root=spec.data_root, ids=set(by_id), again=False,
                                 log=console.print)
            if only != "train":
                measurable = _measurable(store, by_id, out)
                run.measure([t for tid, t in by_id.items() if tid in measurable])
        except KeyboardInterrupt:  # Ray is shut down by now (train's finally): say what is kept and stop
            statuses = Counter(r["status"] for r in store.rows(ids=by_id))
            store.finish_run(run.run_id, {"interrupted": True, "statuses": dict(statuses)})
            raise RunInterrupted(f"{sum(statuses[s] for s in FINAL)} of {len(trials)} trials are done, "
                                 f"{statuses['trained']} trained (to measure) and {statuses['failed']} failed (to run "
                                 f"again) in {out / 'results.sqlite'}") from None
        summary.statuses = dict(Counter(r["status"] for r in store.rows(ids=by_id)))
        store.export_csv(out / "results.csv")
        if summary.statuses:
            write_report(out)
        summary.wall_seconds = time.perf_counter() - wall
        store.finish_run(run.run_id, {k: v for k, v in dataclasses.asdict(summary).items() if k != "out"})  # no paths
    finally:
        store.close()
    return summary


def run_summary_lines(summary: RunSummary) -> list[str]:
    """The summary a person reads at the end of a run."""
    n = max(summary.trained, 1)
    capacity = summary.trial_stage_seconds * summary.workers
    busy = (summary.trial_busy_seconds + summary.shared_busy_seconds) / capacity if capacity else 0.0
    return [
        f"results: {summary.out}/results.sqlite, results.csv, leaderboard.md; statuses {summary.statuses}",
        f"wall {summary.wall_seconds:.0f} s = checks {summary.check_seconds:.0f} s + Ray start "
        f"{summary.ray_start_seconds:.0f} s + shared stages and trials {summary.trial_stage_seconds:.0f} s + "
        f"measurement {summary.measure_seconds:.0f} s (of it {summary.idle_wait_seconds:.0f} s waiting for an idle "
        f"machine; then {summary.busy_cores_before_measure:.2f} cores busy"
        + (": the machine was busy, the latencies are indicative only)" if summary.measured_busy else ")"),
        f"trials: {summary.trained} run ({summary.trial_busy_seconds / n:.1f} s each on average), "
        f"{summary.skipped} skipped as done, {summary.measured} measured; shared stages "
        f"{summary.shared_busy_seconds:.0f} s of work",
        f"runner overhead per trial: {summary.return_latency_seconds * 1000:.0f} ms from a trial's end to its stored "
        f"row, {summary.store_seconds / n * 1000:.1f} ms of it writing to the database; workers busy "
        f"{busy:.0%} of the trial stage (the rest: scheduling, waits for shared stages, the last trials' tail)",
    ]

