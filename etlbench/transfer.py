"""The transfer baseline (design.md): fine-tune the whole source network with a new head, evaluate on test,
and report beside it the frozen linear probe, the floor every transfer must beat.

Recipe: linear probe, then fine-tune (LP-FT, Kumar et al., ICLR 2022): the new head starts from the probe's
solution and the whole network is fine-tuned; the validation split picks the best epoch (epoch 0 included).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from etlbench import measure
from etlbench.backbones import DEFAULT_BACKBONE, SourceNetwork, create_backbone
from etlbench.data import TaskData, dataset_for_task, load_dataset, task_data
from etlbench.paths import data_root
from etlbench.probe import head_from_probe, linear_probe
from etlbench.tasks import create_task
from etlbench.train import TaskModel, TrainConfig, build_task_model, evaluate, fine_tune, resolve_device


@dataclass(frozen=True)
class TransferSpec:
    """Everything that determines a transfer baseline (its checkpoint is cached under this spec)."""

    task: str
    backbone: str = DEFAULT_BACKBONE
    backbone_weights: str | None = None  # a local weights file (None: the backbone's default)
    dataset: str | None = None
    data_root: str | None = None
    input_size: int | None = None
    max_train: int | None = None
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "cpu"  # where it trains ("cuda" for a GPU); it is measured on the CPU


def run_transfer(spec: TransferSpec, out_dir: str | Path | None = None, threads: int | None = None,
                 data: TaskData | None = None) -> dict[str, Any]:
    """Train, evaluate and measure one transfer baseline (on ``data``, the task's splits, if the caller holds
    them); returns one flat result row (JSON-ready)."""
    if threads:
        torch.set_num_threads(threads)
    if data is None:
        task = create_task(spec.task)
        dataset = load_dataset(spec.dataset or dataset_for_task(task, spec.data_root), spec.data_root, seed=spec.seed)
        data = task_data(task, dataset, spec.max_train, spec.seed)  # bad data fails before any training
    task, dataset = data.task, data.dataset
    device = resolve_device(spec.device)
    source = create_backbone(spec.backbone, spec.backbone_weights).to(device)
    size = (spec.input_size, spec.input_size) if spec.input_size else source.preprocess.input_size
    row: dict[str, Any] = {
        "task": task.name, "dataset": dataset.name, "synthetic": dataset.synthetic, "backbone": spec.backbone,
        "seed": spec.seed, "input_size": list(size), "metric_name": task.metric_name,
        "higher_is_better": task.higher_is_better,
        "n_train": len(data.images["train"]), "n_val": len(data.images["val"]), "n_test": len(data.images["test"]),
    }
    if dataset.synthetic:
        row["note"] = " ".join(dataset.notes)

    probe = linear_probe(source, data, size, seed=spec.seed)
    row.update({"probe_cut": probe.cut, "probe_metric": probe.metrics[task.metric_name],
                "probe_metrics": probe.metrics, "probe_val_metric": probe.val_metrics[task.metric_name],
                "probe_seconds": probe.feature_seconds + probe.fit_seconds})

    model = build_task_model(source, task, data.targets["train"], seed=spec.seed).to(device)
    head_from_probe(model.head, probe.probe, task)  # linear probe, then fine-tune (LP-FT)
    result = fine_tune(model, data, source.preprocess, size, spec.train, seed=spec.seed)
    start = time.perf_counter()
    test = evaluate(model, task, data.images["test"], data.targets["test"], source.preprocess, size)
    model.cpu()
    row.update({
        "metric": test[task.metric_name], "metrics": test, "val_metric": result.val_metrics[task.metric_name],
        "best_epoch": result.best_epoch, "epochs": spec.train.epochs, "history": result.history,
        "train_seconds": result.train_seconds,
        "samples_seen": result.samples_seen, "eval_seconds": time.perf_counter() - start,
        "params": measure.count_params(model), "size_bytes": measure.size_bytes(model),
        "macs": measure.count_macs(model, size), "threads": torch.get_num_threads(),
    })
    if out_dir is not None:
        path = checkpoint_path(spec, Path(out_dir))
        row["checkpoint"] = str(path)
        save_checkpoint(model, row, path)
    return row


# Fields added after baselines were cached ("section.field" for the training budget): absent from the key while
# at their default, so that cached checkpoints stay valid.
_LATER_FIELDS = {"backbone_weights": None, "device": "cpu", "train.probe_head": TrainConfig.probe_head,
                 "train.balance_convs": TrainConfig.balance_convs}


def spec_key(spec: TransferSpec) -> str:
    """A short stable hash of everything that determines the baseline."""
    fields = asdict(spec)
    fields["data_root"] = str(data_root(spec.data_root))
    if spec.dataset == dataset_for_task(create_task(spec.task), spec.data_root):
        fields["dataset"] = None  # the task's own dataset, named or not, is one baseline
    for dotted, default in _LATER_FIELDS.items():
        *section, name = dotted.split(".")
        owner = fields[section[0]] if section else fields
        if owner[name] == default:
            del owner[name]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def checkpoint_path(spec: TransferSpec, out_dir: Path) -> Path:
    backbone = spec.backbone.replace("/", "_")
    return out_dir / f"transfer-{spec.task}-{backbone}-seed{spec.seed}-{spec_key(spec)}.pt"


def save_checkpoint(model: torch.nn.Module, row: dict[str, Any], path: Path) -> Path:
    """State dict and the result row (as JSON text), loadable with ``torch.load(..., weights_only=True)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "row": json.dumps(row)}, path)
    return path


def cached_transfer(spec: TransferSpec, cache_dir: str | Path, source: SourceNetwork,
                    data: TaskData) -> tuple[TaskModel, dict[str, Any]]:
    """The transfer baseline of ``spec`` (whose source network and task data the caller already holds): read
    from ``cache_dir`` if trained before, else trained and saved."""
    path = checkpoint_path(spec, Path(cache_dir))
    if not path.is_file():
        run_transfer(spec, cache_dir, data=data)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    row = json.loads(saved["row"])
    model = build_task_model(source, data.task, data.targets["train"], seed=spec.seed)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), row
