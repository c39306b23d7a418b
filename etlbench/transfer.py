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

import numpy as np
import torch

from etlbench import measure
from etlbench.backbones import DEFAULT_BACKBONE, Preprocess, SourceNetwork, create_backbone, weights_fingerprint
from etlbench.data import TaskData, dataset_for_task, load_dataset, task_data
from etlbench.identity import identity
from etlbench.model_io import load_tensors, save_pruned
from etlbench.probe import PROBE_TOL, fit_probe, head_from_probe, linear_probe, trunk_features
from etlbench.tasks import create_task
from etlbench.train import (
    ANYTIME,
    TaskModel,
    TrainConfig,
    TrainResult,
    build_task_model,
    evaluate,
    fine_tune,
    predict,
    prepare,
    resolve_device,
)

#: The transfer baseline's recipe (chosen on val, docs/recipe-search/README.md): TrainConfig's defaults (frozen
#: norms, balanced convs, head lr 1e-4, trunk lr 1e-3, 5% warm-up, cosine, bf16) for 22,048 samples seen.
TRANSFER = TrainConfig(samples=22_048, eval_at=ANYTIME)
PROBE_SCALE_FLOOR = 0.5  # of the mean feature std: dead filters of a pruned trunk get no outsized head weights


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
    train: TrainConfig = TRANSFER
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

    def load_data(self, source: SourceNetwork | None = None) -> TaskData:
        """The task's splits, resized once to the input size (bad data raises here, before any training)."""
        task = create_task(self.task)
        dataset = load_dataset(self.dataset or dataset_for_task(task, self.data_root), self.data_root, self.seed)
        return task_data(task, dataset, self.max_train, self.seed).at_size(self.input_hw(source))

    def input_hw(self, source: SourceNetwork | None = None) -> tuple[int, int]:
        """The input size in pixels: the spec's, else the backbone's (built here where ``source`` is not given)."""
        if self.input_size:
            return self.input_size, self.input_size
        source = source if source is not None else create_backbone(self.backbone, self.backbone_weights)
        return source.preprocess.input_size


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

    row.update(_floor(source, data, size, spec.seed))

    model = build_task_model(source, task, data.targets["train"], seed=spec.seed).to(device)
    result = probe_then_fine_tune(model, data, source.preprocess, size, spec.train, spec.seed)
    model.cpu()
    source.cpu()
    row.update({
        "metric": result.test_metrics[task.metric_name], "metrics": result.test_metrics,
        "group_metrics": data.group_metrics("test", result.test_predictions),
        "val_metric": result.val_metrics[task.metric_name], "best_samples": result.best_samples,
        "budget_samples": spec.train.total_steps(len(data.images["train"])) * spec.train.batch_size,
        "history": result.history, "precision": spec.train.precision,
        "train_seconds": result.train_seconds, "samples_seen": result.samples_seen,
        "params": measure.count_params(model), "size_bytes": measure.size_bytes(model),
        "macs": measure.count_macs(model, size), "threads": torch.get_num_threads(),
    })
    return model, row


def _floor(source: SourceNetwork, data: TaskData, size: tuple[int, int], seed: int) -> dict[str, Any]:
    """The row's floor: the frozen linear probe of the source's features, or for verification the frozen source's
    own embedding (nothing trained)."""
    task = data.task
    if task.kind == "verification":
        start = time.perf_counter()
        frozen = build_task_model(source, task, data.targets["train"])
        val, test = (evaluate(frozen, task, data.images[s], data.targets[s], source.preprocess, size)
                     for s in ("val", "test"))
        return {"probe_cut": None, "probe_metric": test[task.metric_name], "probe_metrics": test,
                "probe_val_metric": val[task.metric_name], "probe_seconds": time.perf_counter() - start}
    probe = linear_probe(source, data, size, seed=seed)
    return {"probe_cut": probe.cut, "probe_metric": probe.metrics[task.metric_name], "probe_metrics": probe.metrics,
            "probe_val_metric": probe.val_metrics[task.metric_name],
            "probe_seconds": probe.feature_seconds + probe.fit_seconds}


def probe_then_fine_tune(model: TaskModel, data: TaskData, preprocess: Preprocess, size: tuple[int, int],
                         cfg: TrainConfig, seed: int, teacher: np.ndarray | None = None) -> TrainResult:
    """The recipe of the transfer baseline, and of every pruned model's recovery: :func:`~etlbench.train.prepare`
    the network (conv scales, norms), start the head at the linear probe of its trunk's features (LP-FT, Kumar
    et al., ICLR 2022), then :func:`~etlbench.train.fine_tune` (with ``teacher``'s
    outputs where the recipe distils). Time, samples and the anytime curve include the preparation and the
    probe's pass over the train split."""
    start = time.perf_counter()
    x, y = data.images["train"], data.targets["train"]
    prepare(model, x, preprocess, size, cfg, seed)
    if data.task.kind != "verification":  # verification's head is the source's trained embedding
        probe = fit_probe(data.task, trunk_features(model.trunk, x, preprocess, size), y, seed, tol=PROBE_TOL,
                          scale_floor=PROBE_SCALE_FLOOR)
        head_from_probe(model.head, probe, data.task)
    setup_seconds = time.perf_counter() - start
    result = fine_tune(model, data, preprocess, size, cfg, seed=seed, teacher=teacher)
    for point in result.history:
        point["seconds"] += setup_seconds
        point["samples"] += len(x)
    return replace(result, train_seconds=result.train_seconds + setup_seconds,
                   samples_seen=result.samples_seen + len(x), best_samples=result.best_samples + len(x))


def checkpoint_path(spec: TransferSpec, cache_dir: str | Path) -> Path:
    """Where the baseline of ``spec`` is cached: its task, backbone and seed for people, its identity for the code."""
    return Path(cache_dir) / f"transfer-{spec.task}-{spec.backbone.replace('/', '_')}-seed{spec.seed}-{spec.key()}.pt"


def transfer_baseline(spec: TransferSpec, cache_dir: str | Path, source: SourceNetwork | None = None,
                      data: TaskData | None = None) -> tuple[TaskModel, dict[str, Any]]:
    """The transfer baseline of ``spec`` (resolved) and its result row: read from ``cache_dir`` when trained
    before under the same identity, else trained and saved there (a checkpoint that loads with
    ``torch.load(..., weights_only=True)``). ``source`` and ``data`` spare rebuilding what the caller holds."""
    source = source if source is not None else create_backbone(spec.backbone, spec.backbone_weights)
    data = (data if data is not None else spec.load_data(source)).at_size(spec.input_hw(source))
    path = checkpoint_path(spec, cache_dir)
    if not path.is_file():
        model, row = _train_baseline(spec, source, data)
        path.parent.mkdir(parents=True, exist_ok=True)
        row["checkpoint"] = path.name
        partial = path.with_suffix(f".{os.getpid()}.partial")  # a killed writer never leaves a truncated cache
        save_pruned(model, str(partial), meta={"row": json.dumps(row)})
        os.replace(partial, path)
        return model.eval(), row
    saved = load_tensors(path, "a transfer baseline saved by etlbench")
    model = build_task_model(source, data.task, data.targets["train"], seed=spec.seed)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), json.loads(saved["meta"]["row"])


def teacher_outputs(spec: TransferSpec, cache_dir: str | Path, baseline: TaskModel, data: TaskData,
                    preprocess: Preprocess, size: tuple[int, int]) -> np.ndarray:
    """The transfer baseline's outputs for every train image, as it is and flipped (N x 2 x outputs, float32):
    the teacher of distillation, computed once per setting and cached beside the baseline."""
    path = Path(cache_dir) / f"teacher-{spec.key()}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    device = resolve_device(spec.device)
    baseline.to(device)
    x = data.images["train"]
    flipped = np.ascontiguousarray(x[:, :, ::-1])  # N x H x W x C: the width axis, as training flips
    out = np.stack([predict(baseline, x, preprocess, size), predict(baseline, flipped, preprocess, size)],
                   axis=1).astype(np.float32)
    baseline.cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial.npy")
    np.save(partial, out)
    os.replace(partial, path)
    return out
