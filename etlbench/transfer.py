"""The transfer baseline (design.md): fine-tune the whole source network with a new head, evaluate on test,
and report beside it the frozen linear probe, the floor every transfer must beat."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from etlbench import measure
from etlbench.backbones import DEFAULT_BACKBONE, create_backbone
from etlbench.data import dataset_for_task, load_dataset, task_data
from etlbench.probe import linear_probe
from etlbench.tasks import create_task
from etlbench.train import TrainConfig, build_task_model, evaluate, fine_tune


@dataclass(frozen=True)
class TransferSpec:
    """Everything that determines a transfer baseline (its checkpoint is cached under this spec)."""

    task: str
    backbone: str = DEFAULT_BACKBONE
    dataset: str | None = None
    data_root: str | None = None
    input_size: int | None = None
    max_train: int | None = None
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: bool = True


def run_transfer(spec: TransferSpec, out_dir: str | Path | None = None, threads: int | None = None) -> dict[str, Any]:
    """Train, evaluate and measure one transfer baseline; returns one flat result row (JSON-ready)."""
    if threads:
        torch.set_num_threads(threads)
    task = create_task(spec.task)
    dataset_name = spec.dataset or dataset_for_task(task, spec.data_root)
    dataset = load_dataset(dataset_name, spec.data_root, seed=spec.seed)  # bad data fails before any training
    data = task_data(task, dataset, spec.max_train, spec.seed)
    source = create_backbone(spec.backbone)
    size = (spec.input_size, spec.input_size) if spec.input_size else source.preprocess.input_size
    row: dict[str, Any] = {
        "task": task.name, "dataset": dataset.name, "synthetic": dataset.synthetic, "backbone": spec.backbone,
        "seed": spec.seed, "input_size": list(size), "metric_name": task.metric_name,
        "higher_is_better": task.higher_is_better,
        "n_train": len(data.images["train"]), "n_val": len(data.images["val"]), "n_test": len(data.images["test"]),
    }
    if dataset.synthetic:
        row["note"] = " ".join(dataset.notes)

    if spec.probe:
        probe = linear_probe(source, data, size, seed=spec.seed)
        row.update({"probe_cut": probe.cut, "probe_metric": probe.metrics[task.metric_name],
                    "probe_metrics": probe.metrics, "probe_seconds": probe.feature_seconds + probe.fit_seconds})

    model = build_task_model(source, task, data.targets["train"], seed=spec.seed)
    result = fine_tune(model, data, source.preprocess, size, spec.train, seed=spec.seed)
    start = time.perf_counter()
    test = evaluate(model, task, data.images["test"], data.targets["test"], source.preprocess, size)
    row.update({
        "metric": test[task.metric_name], "metrics": test, "val_metric": result.val_metrics[task.metric_name],
        "best_epoch": result.best_epoch, "epochs": spec.train.epochs, "train_seconds": result.train_seconds,
        "samples_seen": result.samples_seen, "eval_seconds": time.perf_counter() - start,
        "params": measure.count_params(model), "size_bytes": measure.size_bytes(model),
        "macs": measure.count_macs(model, size), "threads": torch.get_num_threads(),
    })
    if out_dir is not None:
        row["checkpoint"] = str(save_checkpoint(model, row, Path(out_dir)))
    return row


def checkpoint_name(row: dict[str, Any]) -> str:
    return f"transfer-{row['task']}-{row['dataset']}-{row['backbone'].replace('/', '_')}-seed{row['seed']}.pt"


def save_checkpoint(model: torch.nn.Module, row: dict[str, Any], out_dir: Path) -> Path:
    """State dict and the result row (as JSON text), loadable with ``torch.load(..., weights_only=True)``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / checkpoint_name(row)
    torch.save({"state_dict": model.state_dict(), "row": json.dumps(row)}, path)
    return path
