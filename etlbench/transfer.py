"""The transfer baseline (docs/design.md): fine-tune the whole source network with a new head, evaluate on test,
and report beside it the frozen linear probe, the floor every transfer must beat.

Recipe: linear probe, then fine-tune (LP-FT, Kumar et al., ICLR 2022): the new head starts from the probe's
solution and the whole network is fine-tuned; the validation split picks the best epoch (epoch 0 included).

:class:`TransferSpec` is also the *setting* of every trial (task, data, backbone, input size, seed): the
baseline a trial starts from and is compared with. :func:`transfer_baseline` is the one entry point: it reads
the baseline from the cache when one was trained under the same identity, and trains it otherwise.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from etlbench import measure
from etlbench.backbones import DEFAULT_BACKBONE, SourceNetwork, create_backbone, weights_fingerprint
from etlbench.data import TaskData, dataset_for_task, load_dataset, task_data
from etlbench.identity import identity
from etlbench.model_io import save_pruned
from etlbench.probe import head_from_probe, linear_probe
from etlbench.tasks import create_task
from etlbench.train import TaskModel, TrainConfig, build_task_model, evaluate, fine_tune, resolve_device


def dataset_name(dataset: str | None) -> str | None:
    """What rows and identities call a dataset: its registered name, or a file's stem (never its folder)."""
    return Path(dataset).stem if dataset and dataset.endswith(".npz") else dataset


@dataclass(frozen=True)
class TransferSpec:
    """Everything that determines a transfer baseline and the setting of the trials that start from it.
    ``dataset`` is a registered name or a canonical ``.npz`` path (``None`` until :meth:`resolved`: the task's
    own, or synthetic without a data root). :meth:`resolved` fills in the content hashes of the dataset and of
    the backbone's weights file, by which identities name them (paths never enter an identity)."""

    task: str
    dataset: str | None = field(default=None, metadata={"identity": dataset_name})
    data_fingerprint: str = ""
    data_root: str | None = field(default=None, metadata={"identity": False})
    backbone: str = DEFAULT_BACKBONE
    backbone_weights: str | None = field(default=None, metadata={"identity": False})  # None: the default file
    weights_fingerprint: str = ""
    input_size: int | None = None
    max_train: int | None = None
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    threads: int = 1  # torch and BLAS threads of training (and of the trials' pruning and recovery)
    device: str = "cpu"  # where it trains ("cuda" for a GPU); it is measured on the CPU

    def resolved(self) -> TransferSpec:
        """This spec with its dataset named, and dataset and weights fingerprinted (both are read here)."""
        name = self.dataset or dataset_for_task(create_task(self.task), self.data_root)
        return replace(self, dataset=name, data_fingerprint=load_dataset(name, self.data_root, self.seed).fingerprint,
                       weights_fingerprint=weights_fingerprint(self.backbone, self.backbone_weights))

    @property
    def dataset_name(self) -> str | None:
        return dataset_name(self.dataset)

    def key(self) -> str:
        """The baseline's identity (:func:`etlbench.identity.identity`); the spec must be :meth:`resolved`."""
        if not (self.data_fingerprint and self.weights_fingerprint):
            raise ValueError(f"transfer spec of task {self.task!r} is not resolved: call .resolved() first")
        return identity("transfer", self)

    @property
    def data_key(self) -> tuple:
        """What selects the task's splits: specs with equal keys see the same :class:`TaskData`."""
        return (self.task, self.dataset, self.data_root, self.max_train, self.seed)

    def load_data(self) -> TaskData:
        """The task's splits (bad data raises here, before any training)."""
        task = create_task(self.task)
        dataset = load_dataset(self.dataset or dataset_for_task(task, self.data_root), self.data_root, self.seed)
        return task_data(task, dataset, self.max_train, self.seed)

    def input_hw(self, source: SourceNetwork) -> tuple[int, int]:
        """The input size in pixels: the spec's, else the backbone's."""
        return (self.input_size, self.input_size) if self.input_size else source.preprocess.input_size


def _train_baseline(spec: TransferSpec, source: SourceNetwork, data: TaskData) -> tuple[TaskModel, dict[str, Any]]:
    """Fit the frozen linear probe, start the head at it, fine-tune the whole network, evaluate on test."""
    task, dataset = data.task, data.dataset
    device = resolve_device(spec.device)
    source = source.to(device)
    size = spec.input_hw(source)
    row: dict[str, Any] = {
        "task": task.name, "dataset": dataset.name, "data_fingerprint": dataset.fingerprint,
        "synthetic": dataset.synthetic, "backbone": spec.backbone, "seed": spec.seed, "input_size": list(size),
        "metric_name": task.metric_name, "higher_is_better": task.higher_is_better,
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
    source.cpu()
    row.update({
        "metric": test[task.metric_name], "metrics": test, "val_metric": result.val_metrics[task.metric_name],
        "best_epoch": result.best_epoch, "epochs": spec.train.epochs, "history": result.history,
        "train_seconds": result.train_seconds,
        "samples_seen": result.samples_seen, "eval_seconds": time.perf_counter() - start,
        "params": measure.count_params(model), "size_bytes": measure.size_bytes(model),
        "macs": measure.count_macs(model, size), "threads": torch.get_num_threads(),
    })
    return model, row


def checkpoint_path(spec: TransferSpec, cache_dir: str | Path) -> Path:
    """Where the baseline of ``spec`` is cached: its task, backbone and seed for people, its identity for the code."""
    return Path(cache_dir) / f"transfer-{spec.task}-{spec.backbone.replace('/', '_')}-seed{spec.seed}-{spec.key()}.pt"


def transfer_baseline(spec: TransferSpec, cache_dir: str | Path, source: SourceNetwork | None = None,
                      data: TaskData | None = None) -> tuple[TaskModel, dict[str, Any]]:
    """The transfer baseline of ``spec`` (resolved) and its result row: read from ``cache_dir`` when trained
    before under the same identity, else trained and saved there (a checkpoint that loads with
    ``torch.load(..., weights_only=True)``). ``source`` and ``data`` spare rebuilding what the caller holds."""
    source = source if source is not None else create_backbone(spec.backbone, spec.backbone_weights)
    data = data if data is not None else spec.load_data()
    path = checkpoint_path(spec, cache_dir)
    if not path.is_file():
        model, row = _train_baseline(spec, source, data)
        path.parent.mkdir(parents=True, exist_ok=True)
        row["checkpoint"] = path.name
        partial = path.with_suffix(f".{os.getpid()}.partial")  # a killed writer never leaves a truncated cache
        save_pruned(model, str(partial), meta={"row": json.dumps(row)})
        os.replace(partial, path)
        return model.eval(), row
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = build_task_model(source, data.task, data.targets["train"], seed=spec.seed)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), json.loads(saved["meta"]["row"])
