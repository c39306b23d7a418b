"""One benchmark trial (docs/design.md), top to bottom: start model -> prune to the budget -> recover -> evaluate on
test -> row (:func:`train_trial`); measurement comes after (:func:`measure_between`), once the machine is idle.

Every method gets the same data splits, the same recovery budget and the same measurement; reductions and
retention are against the unpruned transfer baseline of the same setting (task, data, backbone, seed;
docs/etl-method.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from etlbench import measure
from etlbench.backbones import create_backbone
from etlbench.data import TaskData
from etlbench.errors import ConfigError
from etlbench.identity import identity
from etlbench.measure import MeasureConfig
from etlbench.methods import PruneContext, PruningMethod, create_method, full_parameters
from etlbench.model_io import load_pruned
from etlbench.results import failure, header
from etlbench.surgery import Budget
from etlbench.tasks import create_task
from etlbench.train import (
    TaskModel,
    TrainConfig,
    build_task_model,
    resolve_device,
    standardize_norms,
    use_threads,
)
from etlbench.transfer import TRANSFER, TransferSpec, probe_then_fine_tune, teacher_outputs, transfer_baseline

# The shared recovery (chosen on val, docs/recipe-search/README.md): the transfer baseline's recipe and budget
# applied to the pruned model, with EagleEye's adaptive batch norm (see etlbench.transfer.probe_then_fine_tune).
RECOVERY = replace(TRANSFER, norm="recalibrate")


@dataclass(frozen=True)
class TrialSpec:
    """Everything that determines a trial: its setting (the transfer baseline it starts from and is compared
    with), the method and its parameters, the budget, the recovery and the measurement conditions. Its
    identity (:func:`etlbench.identity.identity`) is the trial id."""

    setting: TransferSpec
    method: str
    compression: float | None  # target ratio baseline/pruned; None: the method's own operating point
    method_params: dict[str, Any] = field(default_factory=dict)  # every parameter, defaults filled in
    budget_of: str = "params"
    recovery: TrainConfig = RECOVERY
    measure: MeasureConfig = field(default_factory=MeasureConfig)

    @property
    def task(self) -> str:
        return self.setting.task

    @property
    def seed(self) -> int:
        return self.setting.seed

    @property
    def backbone(self) -> str:
        return self.setting.backbone

    @property
    def threads(self) -> int:
        return self.setting.threads

    def __post_init__(self) -> None:  # one trial, one id: 4 and 4.0 are one budget, `etl` is `etl {epsilon: 0.01}`
        if self.compression is not None:
            object.__setattr__(self, "compression", float(self.compression))
        object.__setattr__(self, "method_params", full_parameters(self.method, self.method_params))

    def trial_id(self) -> str:
        return identity("trial", self)

    def configure(self) -> tuple[PruningMethod, Budget | None]:
        """The configured method and budget (``None``: the method's own operating point); a parameter the method
        does not take, a value of the wrong type or a budget it cannot use raises :class:`ConfigError` here."""
        method = create_method(self.method, **self.method_params)
        kind = create_task(self.task).kind
        if kind not in method.task_kinds:
            raise ConfigError(f"method {self.method!r} does not apply to task {self.task!r} ({kind}); it takes "
                              f"{' and '.join(method.task_kinds)} tasks", key="method")
        if self.compression is None:
            if not method.chooses_operating_point:
                raise ConfigError(f"method {self.method!r} cannot choose its own operating point ('auto'): give a "
                                  f"compression")
            return method, None
        try:
            return method, Budget(self.compression, of=self.budget_of)
        except ValueError as err:
            raise ConfigError(f"method {self.method!r}: {err}", key="compression") from err


def retention(metric: float, baseline: float, higher_is_better: bool) -> float:
    """Higher is always better: pruned / baseline for scores, baseline / pruned for errors (docs/etl-method.md);
    NaN where the denominator is 0 (no ratio)."""
    kept, over = (metric, baseline) if higher_is_better else (baseline, metric)
    return kept / over if over else float("nan")


def prune_context(spec: TrialSpec, cache_dir: str | Path, data: TaskData | None = None
                  ) -> tuple[PruneContext, dict[str, Any]]:
    """What a method may read in this trial's setting, and the transfer baseline's row (the baseline is trained
    and cached under ``cache_dir``/transfer on first use)."""
    use_threads(spec.threads)
    setting = spec.setting
    source = create_backbone(setting.backbone, setting.backbone_weights)
    size = setting.input_hw(source)
    data = (data if data is not None else setting.load_data(source)).at_size(size)
    baseline, base_row = transfer_baseline(setting, Path(cache_dir) / "transfer", source, data)
    if spec.recovery.norm == "recalibrate":  # EagleEye: the start models' own statistics, re-estimated after pruning
        for network in (source, baseline):
            standardize_norms(network, data.images["train"], source.preprocess, size, seed=setting.seed)
    ctx = PruneContext(data, source, size, setting.seed, measure.count_params(baseline),
                       measure.count_macs(baseline, size), transfer_model=lambda: baseline,
                       setting_key=setting.key(), cache_dir=str(cache_dir))
    return ctx, base_row


def shared_stage(spec: TrialSpec, cache_dir: str | Path, data: TaskData | None = None) -> None:
    """The work every trial of this method and setting shares (the transfer baseline, e.g. ETL's probes), run
    once so that the trials that follow read it from ``cache_dir``."""
    method, _ = spec.configure()
    ctx = prune_context(spec, cache_dir, data)[0]
    method.shared_stage(ctx)
    teacher(spec, ctx)


def teacher(spec: TrialSpec, ctx: PruneContext) -> np.ndarray | None:
    """The unpruned transfer baseline's outputs on the train split (cached per setting) where the recovery
    distils, else ``None``."""
    if spec.recovery.distill == 0:
        return None
    return teacher_outputs(spec.setting, Path(ctx.cache_dir) / "transfer", ctx.transfer_model(), ctx.data,
                           ctx.source.preprocess, ctx.size)


def train_trial(spec: TrialSpec, cache_dir: str | Path, data: TaskData | None = None
                ) -> tuple[dict[str, Any], TaskModel | None]:
    """Prune, recover and evaluate on test: the row fields (status ``trained``) and the pruned model, or the
    fields of a final row (``infeasible``, with the reason) and ``None``. Errors propagate to the caller."""
    method, budget = spec.configure()
    ctx, base = prune_context(spec, cache_dir, data)
    task = ctx.data.task
    row: dict[str, Any] = dict(
        dataset=ctx.data.dataset.name, data_fingerprint=ctx.data.dataset.fingerprint,
        synthetic=ctx.data.dataset.synthetic, metric_name=task.metric_name, higher_is_better=task.higher_is_better,
        baseline_metric=base["metric"], baseline_metrics=base.get("metrics", {}),
        baseline_group_metrics=base.get("group_metrics", {}),
        linear_probe_metric=base.get("probe_metric"), input_size=list(ctx.size),
        baseline_train_seconds=base["train_seconds"], baseline_samples_seen=base["samples_seen"],
        budget_of=spec.budget_of, threads=spec.threads)

    start = time.perf_counter()
    outcome = method.prune(ctx, budget)  # the method's start model, pruned to the budget
    from_transfer = method.starts_from == "transfer" or spec.recovery.distill > 0  # a teacher is transferred too
    row.update(outcome.fields, prune_seconds=time.perf_counter() - start,
               start_cost_seconds=base["train_seconds"] if from_transfer else 0.0,
               start_cost_samples=base["samples_seen"] if from_transfer else 0)
    if outcome.status != "ok":
        row.update(status=outcome.status, error=outcome.reason)
        return row, None

    model = outcome.model.to(resolve_device(spec.setting.device))
    result = probe_then_fine_tune(model, ctx.data, ctx.source.preprocess, ctx.size, spec.recovery, spec.seed,
                                  teacher(spec, ctx))
    model.cpu()
    metric = result.test_metrics[task.metric_name]  # of the model that val selected
    row.update(status="trained", error="", metric=metric, metrics=result.test_metrics,
               group_metrics=ctx.data.group_metrics("test", result.test_predictions),
               retention=retention(metric, base["metric"], task.higher_is_better),
               train_seconds=result.train_seconds, samples_seen=result.samples_seen, recovery_steps=result.steps,
               val_metric=result.val_metrics[task.metric_name], recovery_best_samples=result.best_samples,
               recovery_curve=result.history, precision=spec.recovery.precision,
               total_seconds=row["start_cost_seconds"] + row["prune_seconds"] + result.train_seconds)
    return row, model


def baseline_model(spec: TrialSpec, cache_dir: str | Path, data: TaskData | None = None) -> TaskModel:
    """The trial's unpruned transfer baseline (cached under ``cache_dir``/transfer)."""
    use_threads(spec.threads)
    return transfer_baseline(spec.setting, Path(cache_dir) / "transfer", data=data)[0]


def load_pruned_model(spec: TrialSpec, row: dict[str, Any], path: str | Path, data: TaskData | None = None
                      ) -> TaskModel:
    """A pruned model that :func:`~etlbench.model_io.save_pruned` wrote for the trial of ``row``."""
    setting = spec.setting
    data = data if data is not None else setting.load_data()
    skeleton = build_task_model(create_backbone(setting.backbone, setting.backbone_weights), data.task,
                                data.targets["train"], cut=row.get("cut_layer"), seed=setting.seed)
    return load_pruned(skeleton, str(path))


def measured_fields(pruned: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The measurement columns of a row (status ``ok``): the pruned model's figures, the baseline's, and the
    reductions against the unpruned transfer baseline measured under the same conditions."""
    out: dict[str, Any] = {"status": "ok", "compression_achieved": base["params"] / pruned["params"]}
    for key in ("params", "size_bytes", "macs", *measure.latency_medians(pruned)):
        stem = key.removesuffix("_ms")
        out.update({key: pruned[key], f"baseline_{key}": base[key], f"{stem}_reduction": 1 - pruned[key] / base[key]})
        if f"{stem}_iqr_ms" in pruned:
            out[f"{stem}_iqr_ms"] = pruned[f"{stem}_iqr_ms"]
        if f"{stem}_drift" in base:
            out[f"baseline_{stem}_drift"] = base[f"{stem}_drift"]
    out.update({k: pruned[k] for k in ("cpu", "usable_cores", "torch", "allocator", "load_avg_1m")})
    out.update(measure_threads=pruned["threads"], measure_repeats=pruned["repeats"])
    return out


def measure_between(model: TaskModel, baseline: TaskModel, input_size: tuple[int, int], cfg: MeasureConfig,
                    before: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure ``model`` between two measurements of its baseline (``before``: one already taken just now, e.g.
    the previous model's ``after``): its row's measurement columns (:func:`measured_fields` against
    :func:`~etlbench.measure.flanked`), and the baseline's measurement after it, to pass on as the next ``before``."""
    before = before if before is not None else measure.measure(baseline, input_size, cfg)
    pruned = measure.measure(model, input_size, cfg)
    after = measure.measure(baseline, input_size, cfg)
    return measured_fields(pruned, measure.flanked(before, after)), after


class MeasurePass:
    """Trained models measured one after another, each between two timings of its transfer baseline
    (:func:`measure_between`); a model of the same setting as the one before it shares the timing between them,
    so give the models grouped by setting. ``load_baseline`` builds a trial's baseline when the setting changes."""

    def __init__(self, load_baseline: Callable[[TrialSpec], TaskModel]) -> None:
        self._load_baseline = load_baseline
        self._key: tuple[str, MeasureConfig] | None = None
        self._baseline: TaskModel | None = None
        self._before: dict[str, Any] | None = None

    def __call__(self, spec: TrialSpec, model: TaskModel, input_size: tuple[int, int]) -> dict[str, Any]:
        """The measurement columns of ``spec``'s row for ``model``."""
        key = (spec.setting.key(), spec.measure)
        if key != self._key:
            self._key, self._before = None, None
            self._baseline, self._key = self._load_baseline(spec), key
        before, self._before = self._before, None  # a failure below leaves no stale timing to pass on
        fields, self._before = measure_between(model, self._baseline, input_size, spec.measure, before)
        return fields


def trained_row(spec: TrialSpec, cache_dir: str | Path, data: TaskData | None = None
                ) -> tuple[dict[str, Any], TaskModel | None]:
    """The whole row of :func:`train_trial` (with its header) and the pruned model; a trial that raises is a row
    with status ``failed``, the error and its traceback (one failed trial never ends a sweep)."""
    row = header(spec)
    try:
        fields, model = train_trial(spec, cache_dir, data)
    except Exception as err:
        row.update(failure(err))
        return row, None
    row.update(fields)
    return row, model


def run_trial(spec: TrialSpec, cache_dir: str | Path, data: TaskData | None = None) -> dict[str, Any]:
    """Run one trial in this process (train, then measure it and its baseline) and return its results row."""
    row, model = trained_row(spec, cache_dir, data)
    if model is None:
        return row
    try:
        size = tuple(row["input_size"])
        row.update(measure_between(model, baseline_model(spec, cache_dir, data), size, spec.measure)[0])
    except Exception as err:  # the row says why
        row.update(failure(err))
    return row
