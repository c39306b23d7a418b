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

from etlbench import __version__, measure
from etlbench.backbones import DEFAULT_BACKBONE, Preprocess, SourceNetwork, create_backbone
from etlbench.data import TaskData, dataset_for_task, load_dataset, task_data
from etlbench.methods import PruneContext, PruningMethod, create_method
from etlbench.probe import PROBE_TOL, fit_probe, head_from_probe, trunk_features
from etlbench.surgery import Budget, save_pruned
from etlbench.tasks import create_task
from etlbench.train import TaskModel, TrainConfig, TrainResult, balance_conv_scales, evaluate, fine_tune
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
    dataset: str | None = None
    data_root: str | None = None
    input_size: int | None = None
    max_train: int | None = None
    transfer: TrainConfig = field(default_factory=TrainConfig)
    recovery: TrainConfig = RECOVERY
    method_params: dict[str, Any] = field(default_factory=dict)
    budget_of: str = "params"
    threads: int = 1

    def trial_id(self) -> str:
        fields = asdict(self)
        fields.pop("data_root")
        fields["code_version"] = __version__
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


def run_trial(spec: TrialSpec, cache_dir: str | Path = "runs/cache") -> dict[str, Any]:
    """Run one trial and return its results row; a failure is a row with status ``failed`` and the error."""
    row: dict[str, Any] = {"trial_id": spec.trial_id(), "task": spec.task, "backbone": spec.backbone,
                           "method": spec.method, "compression": spec.compression, "seed": spec.seed}
    try:
        row.update(_run(spec, Path(cache_dir)))
    except Exception as err:  # one failed trial never ends a sweep: it becomes a row that says why
        row.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    return row


@dataclass
class _Setup:
    method: PruningMethod
    budget: Budget | None
    data: TaskData
    source: SourceNetwork


def _prepare(spec: TrialSpec) -> _Setup:
    """Everything a trial needs that can be checked fast: a bad method parameter, budget, task, dataset or
    backbone raises here, before any long computation."""
    method = create_method(spec.method, **spec.method_params)
    if spec.compression is None and spec.method != "etl":
        raise ValueError(f"method {spec.method!r} needs a compression (only 'etl' picks its own operating point)")
    budget = Budget(spec.compression, of=spec.budget_of) if spec.compression is not None else None
    task = create_task(spec.task)
    dataset = load_dataset(spec.dataset or dataset_for_task(task, spec.data_root), spec.data_root, seed=spec.seed)
    return _Setup(method, budget, task_data(task, dataset, spec.max_train, spec.seed), create_backbone(spec.backbone))


def validate_trial(spec: TrialSpec) -> None:
    """Raise, before any long computation, for a bad method parameter, budget, task, dataset or backbone."""
    _prepare(spec)


def _run(spec: TrialSpec, cache_dir: Path) -> dict[str, Any]:
    torch.set_num_threads(spec.threads)
    setup = _prepare(spec)
    method, budget, data, source = setup.method, setup.budget, setup.data, setup.source
    task, dataset = data.task, data.dataset
    size = (spec.input_size, spec.input_size) if spec.input_size else source.preprocess.input_size
    transfer_spec = TransferSpec(task=spec.task, backbone=spec.backbone, dataset=spec.dataset,
                                 data_root=spec.data_root, input_size=spec.input_size, max_train=spec.max_train,
                                 seed=spec.seed, train=spec.transfer)
    baseline, base_row = cached_transfer(transfer_spec, cache_dir / "transfer", source, data)
    row: dict[str, Any] = {"dataset": dataset.name, "synthetic": dataset.synthetic, "metric_name": task.metric_name,
                           "higher_is_better": task.higher_is_better, "baseline_metric": base_row["metric"],
                           "input_size": list(size), "budget_of": spec.budget_of}
    ctx = PruneContext(data, source, size, spec.seed, measure.count_params(baseline),
                       measure.count_macs(baseline, size), transfer_model=lambda: baseline, cache_dir=str(cache_dir))

    start = time.perf_counter()
    outcome = method.prune(method.start_model(ctx), ctx, budget)
    prune_seconds = time.perf_counter() - start
    row.update(method.fields, prune_seconds=prune_seconds,
               start_cost_seconds=base_row["train_seconds"] if method.starts_from == "transfer" else 0.0,
               start_cost_samples=base_row["samples_seen"] if method.starts_from == "transfer" else 0)
    if outcome.status != "ok":
        return {**row, "status": outcome.status, "error": outcome.reason}

    model = outcome.model
    result = recover(model, data, source.preprocess, size, spec.recovery, spec.seed)
    test = evaluate(model, task, data.images["test"], data.targets["test"], source.preprocess, size)
    pruned_m = measure.measure(model, size, threads=spec.threads)
    base_m = measure.measure(baseline, size, threads=spec.threads)
    buffer = io.BytesIO()
    save_pruned(model, buffer)
    size_bytes = buffer.getbuffer().nbytes
    metric = test[task.metric_name]
    row.update(
        status="ok", error="", metric=metric, metrics=test, retention=_retention(metric, base_row["metric"],
                                                                                task.higher_is_better),
        params=pruned_m["params"], params_reduction=1 - pruned_m["params"] / base_m["params"],
        compression_achieved=base_m["params"] / pruned_m["params"],
        size_bytes=size_bytes, macs=pruned_m["macs"], macs_reduction=1 - pruned_m["macs"] / base_m["macs"],
        latency_ms=pruned_m["latency_ms"], latency_iqr_ms=pruned_m["latency_iqr_ms"],
        latency_reduction=1 - pruned_m["latency_ms"] / base_m["latency_ms"],
        latency_b32_ms=pruned_m["latency_b32_ms"], latency_b32_reduction=1 - pruned_m["latency_b32_ms"]
        / base_m["latency_b32_ms"], baseline_params=base_m["params"], baseline_macs=base_m["macs"],
        baseline_latency_ms=base_m["latency_ms"], baseline_latency_b32_ms=base_m["latency_b32_ms"],
        train_seconds=result.train_seconds, samples_seen=result.samples_seen, recovery_steps=result.steps,
        val_metric=result.val_metrics[task.metric_name], recovery_best_epoch=result.best_epoch,
        total_seconds=row["start_cost_seconds"] + prune_seconds + result.train_seconds,
        threads=spec.threads, cpu=pruned_m["cpu"], torch=pruned_m["torch"],
    )
    return row
