"""Loading the named datasets (declared in :mod:`etlbench.plugins`, torch-free) and the per-task view that
training reads."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from etlbench.data.canonical import SPLITS, DatasetError, FaceData, load_npz, validate_arrays
from etlbench.paths import data_root
from etlbench.plugins import SYNTHETIC, DatasetSpec
from etlbench.registry import DATASETS
from etlbench.tasks import Task
from etlbench.tasks.base import Groups, group_metrics

SYNTHETIC_SIZE = 2000


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, root: str | None, seed: int) -> FaceData:
    if name.endswith(".npz"):
        return load_npz(name)
    spec: DatasetSpec = DATASETS.get(name)
    if spec.relative_path is None:
        from etlbench.data.synthetic import make_synthetic_faces

        arrays = make_synthetic_faces(n=SYNTHETIC_SIZE, seed=seed)
        validate_arrays(arrays, SYNTHETIC)
        return FaceData(SYNTHETIC, arrays, f"generated (seed {seed})", synthetic=True,
                        notes=["SYNTHETIC DATA: procedural faces, not a real dataset; figures are not comparable "
                               "to published results"])
    if root is None:
        raise DatasetError(f"dataset {name!r} needs a data root: pass --data-root or set ETLBENCH_DATA "
                           f"(expected file <root>/{spec.relative_path})")
    return load_npz(spec.path(Path(root)), name)


def load_dataset(name: str, root: str | Path | None = None, seed: int = 0) -> FaceData:
    """A registered dataset by name (or a canonical ``.npz`` path), validated; synthetic data comes from ``seed``.
    The last few datasets read stay in memory (a file rewritten meanwhile keeps the content, and fingerprint, read
    first while it stays there)."""
    resolved = data_root(root)
    return _load_cached(name, str(resolved) if resolved is not None else None, seed if name == SYNTHETIC else 0)


def dataset_for_task(task: Task, root: str | Path | None = None) -> str:
    """The task's real dataset when a data root is set, otherwise the synthetic default."""
    return task.default_dataset if data_root(root) is not None else SYNTHETIC


@dataclass
class TaskData:
    """One task's images (uint8 N x H x W x C) and checked targets per split, and each sample's subgroup of every
    attribute the task reports its metric for (:meth:`Task.groups`), with the groups' names."""

    task: Task
    dataset: FaceData
    images: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    groups: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # split -> attribute -> group index
    group_names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # attribute -> the groups' names

    def __len__(self) -> int:
        return sum(len(v) for v in self.images.values())

    def group_metrics(self, split: str, predictions: np.ndarray) -> dict[str, dict[str, dict[str, float]]]:
        """The task's metric per subgroup of ``split`` (:meth:`Task.group_metrics`) for a model's ``predictions``."""
        return group_metrics(self.task, predictions, self.targets[split], self.groups.get(split, {}), self.group_names)

    def portable(self) -> TaskData:
        """The same splits without the whole dataset's arrays: what a parallel runner ships to its workers."""
        return replace(self, dataset=replace(self.dataset, arrays={}))

    def at_size(self, size: tuple[int, int]) -> TaskData:
        """The same splits with every image resized once to ``size`` (H, W), so that training and evaluation do
        not resize every batch again (the data is as ``size``-pixel uint8, rounded; itself where it already is)."""
        if all(v.shape[1:3] == tuple(size) for v in self.images.values()):
            return self
        return replace(self, images={k: resize_images(v, size) for k, v in self.images.items()})


def resize_images(images: np.ndarray, size: tuple[int, int], chunk: int = 512) -> np.ndarray:
    """uint8 N x H x W x C images resized to ``size`` (bilinear with antialiasing, as
    :class:`~etlbench.backbones.Preprocess` resizes), rounded back to uint8."""
    out = np.empty((len(images), *size, images.shape[3]), np.uint8)
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(images[start:start + chunk]).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        out[start:start + chunk] = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def _train_subset(idx: np.ndarray, max_train: int | None, seed: int) -> np.ndarray:
    """``idx``, or a seeded random ``max_train`` of them (sorted) where there are more."""
    if max_train is None or len(idx) <= max_train:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, max_train, replace=False))


def task_data(task: Task, dataset: FaceData, max_train: int | None = None, seed: int = 0) -> TaskData:
    """Select the task's samples per split; ``max_train`` keeps a seeded random subset of the train split.
    Verification splits by pair folds (:func:`etlbench.verification.split_by_folds`)."""
    if task.kind == "verification":
        from etlbench.verification import split_by_folds

        images, targets = split_by_folds(dataset.arrays, str(dataset.source), **task.folds)
        idx = _train_subset(np.arange(len(images["train"])), max_train, seed)
        images["train"], targets["train"] = images["train"][idx], targets["train"][idx]
        return TaskData(task, dataset, images, targets)
    try:
        y = task.targets(dataset.arrays)
        found = task.groups(dataset.arrays)
    except ValueError as err:
        raise DatasetError(f"{dataset.source}: {err}") from err
    if "split" not in dataset.arrays:
        raise DatasetError(f"{dataset.source}: no 'split' array (train/val/test), which task {task.name} needs")
    mask = task.sample_mask(dataset.arrays)
    split = dataset.arrays["split"]
    images, targets, groups = {}, {}, {}
    for name, value in SPLITS.items():
        idx = np.flatnonzero(mask & (split == value))
        if name == "train":
            idx = _train_subset(idx, max_train, seed)
        if len(idx) == 0:
            raise DatasetError(f"{dataset.source}: no {name} samples for task {task.name}")
        images[name], targets[name], groups[name] = dataset.images[idx], y[idx], subgroups(found, idx)
    return TaskData(task, dataset, images, targets, groups, {attribute: g.names for attribute, g in found.items()})


def subgroups(found: dict[str, Groups], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each attribute's group labels of the samples ``idx``."""
    return {attribute: g.labels[idx] for attribute, g in found.items()}
