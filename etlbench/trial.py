"""One benchmark trial (design.md): start model -> prune to the budget -> recover -> evaluate -> measure.

Every method gets the same data splits, the same recovery budget and the same measurement; reductions and
retention are against the unpruned transfer baseline of the same task and seed (etl-method.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from etlbench import code_version, measure
from etlbench.backbones import DEFAULT_BACKBONE, Preprocess, SourceNetwork, create_backbone
from etlbench.data import TaskData, dataset_for_task, load_dataset, task_data
from etlbench.measure import MeasureConfig
from etlbench.methods import PruneContext, PruningMethod, create_method
from etlbench.probe import PROBE_TOL, fit_probe, head_from_probe, trunk_features
from etlbench.surgery import Budget, load_pruned, save_pruned
from etlbench.tasks import create_task
from etlbench.train import (
    TaskModel,
    TrainConfig,
    TrainResult,
    balance_conv_scales,
    build_task_model,
    evaluate,
    fine_tune,
    resolve_device,
)
from etlbench.transfer import TransferSpec, cached_transfer

# The shared recovery: balance the conv scales, start the head at the linear probe of the pruned trunk, then
# fine-tune (LP-FT, as the transfer baseline). See recover().
RECOVERY = TrainConfig(epochs=1, lr=1e-4, probe_head=True, balance_convs=True)
PROBE_SCALE_FLOOR = 0.5  # of the mean feature std: dead filters of a pruned trunk get no outsized head weights


@dataclass(frozen=True)
class TrialSpec:
    """Everything that determines a trial; its hash (with the code version) is the trial id."""

    task: str
    method: str
    compression: float | None  # target params ratio baseline/pruned; None: the method's own operating point
    seed: int = 0
    backbone: str = DEFAULT_BACKBONE
    backbone_weights: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    input_size: int | None = None
    max_train: int | None = None
    transfer: TrainConfig = field(default_factory=TrainConfig)
    recovery: TrainConfig = RECOVERY
    method_params: dict[str, Any] = field(default_factory=dict)
    budget_of: str = "params"
    threads: int = 1  # torch threads for pruning and training
    device: str = "cpu"  # where recovery trains ("cuda" for a GPU); pruning and measurement run on the CPU
    measure: MeasureConfig = field(default_factory=MeasureConfig)

    def trial_id(self) -> str:
        fields = asdict(self)
        fields.pop("data_root")
        fields["code_version"] = code_version()
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _retention(metric: float, baseline: float, higher_is_better: bool) -> float:
    """Higher is always better: pruned / baseline for scores, baseline / pruned for errors (etl-method.md)."""
    return metric / baseline if higher_is_better else baseline / metric


def recover(model: TaskModel, data: TaskData, preprocess: Preprocess, size: tuple[int, int], cfg: TrainConfig,
            seed: int) -> TrainResult:
    """Recovery after pruning, the same for every method: optionally balance the conv scales
    (:func:`~etlbench.train.balance_conv_scales`) and start the head at the linear probe of the pruned trunk
    (Kumar et al., ICLR 2022), then :func:`~etlbench.train.fine_tune`. Time and samples include the probe."""
    start = time.perf_counter()
    if cfg.balance_convs:
        balance_conv_scales(model)
    probed = 0
    if cfg.probe_head:
        x, y = data.images["train"], data.targets["train"]
        probe = fit_probe(data.task, trunk_features(model.trunk, x, preprocess, size), y, seed, tol=PROBE_TOL,
                          scale_floor=PROBE_SCALE_FLOOR)
        head_from_probe(model.head, probe, data.task)
        probed = len(x)
    setup_seconds = time.perf_counter() - start
    result = fine_tune(model, data, preprocess, size, cfg, seed=seed)
    return replace(result, train_seconds=result.train_seconds + setup_seconds,
                   samples_seen=result.samples_seen + probed)


def transfer_spec(spec: TrialSpec) -> TransferSpec:
    """The transfer baseline a trial starts from and is compared with (one per task, dataset and seed)."""
    return TransferSpec(task=spec.task, backbone=spec.backbone, backbone_weights=spec.backbone_weights,
                        dataset=spec.dataset, data_root=spec.data_root, device=spec.device,
                        input_size=spec.input_size, max_train=spec.max_train, seed=spec.seed, train=spec.transfer)


def load_trial_data(spec: TrialSpec) -> TaskData:
    """The task's splits for ``spec`` (bad data raises here, before any training)."""
    task = create_task(spec.task)
    dataset = load_dataset(spec.dataset or dataset_for_task(task, spec.data_root), spec.data_root, seed=spec.seed)
    return task_data(task, dataset, spec.max_train, spec.seed)


@dataclass
class _Setup:
    method: PruningMethod
    budget: Budget | None
    data: TaskData
    source: SourceNetwork
    size: tuple[int, int]


def configure_method(spec: TrialSpec) -> tuple[PruningMethod, Budget | None]:
    """The trial's configured method and budget (``None``: the method's own operating point); a parameter the
    method does not take or a bad budget raises here, at once."""
    method = create_method(spec.method, **spec.method_params)
    if spec.compression is None and spec.method != "etl":
        raise ValueError(f"method {spec.method!r} needs a compression (only 'etl' picks its own operating point)")
    return method, Budget(spec.compression, of=spec.budget_of) if spec.compression is not None else None


def _prepare(spec: TrialSpec, data: TaskData | None = None) -> _Setup:
    """Everything a trial needs that can be checked fast: a bad method parameter, budget, task, dataset or
    backbone raises here, before any long computation."""
    method, budget = configure_method(spec)
    data = data if data is not None else load_trial_data(spec)
    source = create_backbone(spec.backbone, spec.backbone_weights)
    size = (spec.input_size, spec.input_size) if spec.input_size else source.preprocess.input_size
    return _Setup(method, budget, data, source, size)


def validate_trial(spec: TrialSpec) -> None:
    """Raise, before any long computation, for a bad method parameter, budget, task, dataset or backbone."""
    _prepare(spec)


def prune_context(spec: TrialSpec, cache_dir: str | Path, data: TaskData | None = None
                  ) -> tuple[PruningMethod, Budget | None, PruneContext, dict[str, Any]]:
    """The configured method, its budget and what it may read, with the transfer baseline's row (trained and
    cached under ``cache_dir``/transfer on first use)."""
    torch.set_num_threads(spec.threads)
    setup = _prepare(spec, data)
    baseline, base_row = _cached_baseline(spec, setup, cache_dir)
    ctx = PruneContext(setup.data, setup.source, setup.size, spec.seed, measure.count_params(baseline),
                       measure.count_macs(baseline, setup.size), transfer_model=lambda: baseline,
                       cache_dir=str(cache_dir))
    return setup.method, setup.budget, ctx, base_row


def load_baseline(spec: TrialSpec, cache_dir: str | Path, data: TaskData | None = None
                  ) -> tuple[TaskModel, dict[str, Any]]:
    """The trial's transfer baseline and its row: trained once under ``cache_dir``/transfer, then read."""
    torch.set_num_threads(spec.threads)
    return _cached_baseline(spec, _prepare(spec, data), cache_dir)


def _cached_baseline(spec: TrialSpec, setup: _Setup, cache_dir: str | Path) -> tuple[TaskModel, dict[str, Any]]:
    return cached_transfer(transfer_spec(spec), Path(cache_dir) / "transfer", setup.source, setup.data)


def shared_stage(spec: TrialSpec, cache_dir: str | Path, data: TaskData | None = None) -> None:
    """Run the work every trial of this method, task and seed shares (the transfer baseline, and e.g. ETL's
    probes) once, so that the trials that follow read it from ``cache_dir``."""
    method, _, ctx, _ = prune_context(spec, cache_dir, data)
    method.shared_stage(ctx)


def trial_header(spec: TrialSpec) -> dict[str, Any]:
    """The columns that identify a trial's row."""
    return {"trial_id": spec.trial_id(), "task": spec.task, "backbone": spec.backbone, "method": spec.method,
            "compression": spec.compression, "seed": spec.seed}


def train_trial(spec: TrialSpec, cache_dir: str | Path = "runs/cache", data: TaskData | None = None
                ) -> tuple[dict[str, Any], TaskModel | None]:
    """Prune, recover and evaluate on test: the row (status ``trained``) and the pruned model, or a final row
    (``failed`` with the error, ``infeasible`` with the reason) and ``None``. Measurement comes after."""
    row = trial_header(spec)
    try:
        model = _train(spec, cache_dir, data, row)
    except Exception as err:  # one failed trial never ends a sweep: it becomes a row that says why
        row.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        return row, None
    return row, model


def _train(spec: TrialSpec, cache_dir: str | Path, data: TaskData | None, row: dict[str, Any]) -> TaskModel | None:
    method, budget, ctx, base_row = prune_context(spec, cache_dir, data)
    task, size = ctx.data.task, ctx.size
    row.update(dataset=ctx.data.dataset.name, synthetic=ctx.data.dataset.synthetic, metric_name=task.metric_name,
               higher_is_better=task.higher_is_better, baseline_metric=base_row["metric"],
               linear_probe_metric=base_row.get("probe_metric"), input_size=list(size),
               budget_of=spec.budget_of, threads=spec.threads)
    start = time.perf_counter()
    outcome = method.prune(method.start_model(ctx), ctx, budget)
    prune_seconds = time.perf_counter() - start
    from_transfer = method.starts_from == "transfer"
    row.update(method.fields, prune_seconds=prune_seconds,
               start_cost_seconds=base_row["train_seconds"] if from_transfer else 0.0,
               start_cost_samples=base_row["samples_seen"] if from_transfer else 0)
    if outcome.status != "ok":
        row.update(status=outcome.status, error=outcome.reason)
        return None
    model = outcome.model.to(resolve_device(spec.device))
    result = recover(model, ctx.data, ctx.source.preprocess, size, spec.recovery, spec.seed)
    test = evaluate(model, task, ctx.data.images["test"], ctx.data.targets["test"], ctx.source.preprocess, size)
    model.cpu()
    metric = test[task.metric_name]
    row.update(status="trained", error="", metric=metric, metrics=test,
               retention=_retention(metric, base_row["metric"], task.higher_is_better),
               train_seconds=result.train_seconds, samples_seen=result.samples_seen, recovery_steps=result.steps,
               val_metric=result.val_metrics[task.metric_name], recovery_best_epoch=result.best_epoch,
               total_seconds=row["start_cost_seconds"] + prune_seconds + result.train_seconds)
    return model


def load_pruned_model(spec: TrialSpec, row: dict[str, Any], path: str | Path, data: TaskData | None = None
                      ) -> TaskModel:
    """A pruned model that :func:`~etlbench.surgery.save_pruned` wrote for the trial of ``row``."""
    setup = _prepare(spec, data)
    skeleton = build_task_model(setup.source, setup.data.task, setup.data.targets["train"],
                                cut=row.get("cut_layer"), seed=spec.seed)
    return load_pruned(skeleton, str(path))


def measure_model(model: TaskModel, input_size: tuple[int, int], cfg: MeasureConfig) -> dict[str, Any]:
    """:func:`etlbench.measure.measure` under the experiment's settings; ``size_bytes`` is the saved pruned file."""
    out = measure.measure(model, input_size, threads=cfg.threads, batches=cfg.batches, repeats=cfg.repeats,
                          max_seconds=cfg.max_seconds)
    buffer = io.BytesIO()
    save_pruned(model, buffer)
    out["size_bytes"] = buffer.getbuffer().nbytes
    return out


def measured_fields(pruned: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The measurement columns of a row (status ``ok``): the pruned model's figures, the baseline's, and the
    reductions against the unpruned transfer baseline measured under the same conditions."""
    out: dict[str, Any] = {"status": "ok", "compression_achieved": base["params"] / pruned["params"]}
    for key in ("params", "size_bytes", "macs", *(k for k in pruned if k.startswith("latency") and k.endswith("_ms")
                                                    and "iqr" not in k and "per_image" not in k)):
        stem = key.removesuffix("_ms")
        out.update({key: pruned[key], f"baseline_{key}": base[key], f"{stem}_reduction": 1 - pruned[key] / base[key]})
        if f"{stem}_iqr_ms" in pruned:
            out[f"{stem}_iqr_ms"] = pruned[f"{stem}_iqr_ms"]
    out.update({k: pruned[k] for k in ("cpu", "usable_cores", "torch", "allocator", "load_avg_1m")})
    out.update(measure_threads=pruned["threads"], measure_repeats=pruned["repeats"])
    return out


def run_trial(spec: TrialSpec, cache_dir: str | Path = "runs/cache", data: TaskData | None = None) -> dict[str, Any]:
    """Run one trial in this process (train, then measure it and its baseline) and return its results row; a
    failure is a row with status ``failed`` and the error."""
    row, model = train_trial(spec, cache_dir, data)
    if model is None:
        return row
    try:
        size = tuple(row["input_size"])
        base = measure_model(load_baseline(spec, cache_dir, data)[0], size, spec.measure)
        row.update(measured_fields(measure_model(model, size, spec.measure), base))
    except Exception as err:  # the row says why
        row.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    return row
