"""The task interface: each face task owns its labels, head, loss, metrics and the metric's direction."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from etlbench.errors import LabelError, MissingLabels


class TaskHead(nn.Module):
    """Global average pooling and a linear layer; regression outputs are de-standardised into real units."""

    def __init__(self, in_channels: int, num_outputs: int, shift: np.ndarray | None = None,
                 scale: np.ndarray | None = None):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_outputs)
        self.register_buffer("shift", torch.as_tensor(shift if shift is not None else np.zeros(num_outputs),
                                                      dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale if scale is not None else np.ones(num_outputs),
                                                      dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1)) * self.scale + self.shift


class Groups(NamedTuple):
    """One attribute that partitions a dataset's samples (e.g. race): each sample's group index, and the names."""

    labels: np.ndarray
    names: tuple[str, ...]


def label_groups(arrays: dict[str, np.ndarray], key: str, names_key: str | None = None) -> Groups | None:
    """The groups of a label array (``None`` where the dataset lacks it), named by ``names_key`` (default
    ``KEY_names``) where the dataset names them, else by their index. Integers, booleans and whole floats are
    group indices; a negative one (e.g. -1 for unknown) puts its sample in no group."""
    if key not in arrays:
        return None
    labels = np.asarray(arrays[key])
    numeric = labels.dtype == bool or np.issubdtype(labels.dtype, np.integer) or (
        np.issubdtype(labels.dtype, np.floating) and bool(np.all(np.isfinite(labels) & (labels == np.round(labels)))))
    if labels.shape != (len(arrays["images"]),) or not numeric:
        raise LabelError(f"group array {key!r} must hold one whole number per image ({len(arrays['images'])}); "
                         f"got dtype {labels.dtype} shape {labels.shape}")
    labels = labels.astype(np.int64)
    stored = arrays.get(names_key or f"{key}_names")
    names = [str(n) for n in np.asarray(stored).reshape(-1)] if stored is not None else []
    count = max(len(names), int(labels.max(initial=-1)) + 1)
    return Groups(labels, tuple(names + [str(i) for i in range(len(names), count)]))


def band_groups(values: np.ndarray, edges: tuple[float, ...], unit: str) -> Groups:
    """Groups of a numeric value by bands between ``edges`` (each band includes its lower edge)."""
    bounds = [f"{lo:g}-{hi:g}" for lo, hi in itertools.pairwise(edges)]
    names = (f"<{edges[0]:g}", *bounds, f">={edges[-1]:g}")
    return Groups(np.searchsorted(np.asarray(edges), np.asarray(values).reshape(-1), side="right"),
                  tuple(f"{n} {unit}".rstrip() for n in names))


@dataclass(frozen=True)
class Scoring:
    """How a task's model is scored on a dataset whose labels may be coded otherwise than the task's own
    (cross-dataset evaluation): the checked targets, the predictions from the model's outputs, the metrics (the
    primary one first) and what was reconciled, said in ``note``."""

    targets: np.ndarray
    predictions: Callable[[np.ndarray], np.ndarray]
    evaluate: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    metric_name: str
    higher_is_better: bool
    note: str = ""


def group_metrics(scoring: Scoring | Task, predictions: np.ndarray, targets: np.ndarray,
                  groups: dict[str, np.ndarray], names: dict[str, tuple[str, ...]]) -> dict[str, dict[str, dict]]:
    """The primary metric per group of each attribute (``groups``: each sample's group index), with the group's size
    ``n``; empty groups are left out."""
    out: dict[str, dict[str, dict]] = {}
    for attribute, labels in groups.items():
        out[attribute] = {}
        for index, name in enumerate(names[attribute]):
            member = labels == index
            if member.any():
                metric = scoring.evaluate(predictions[member], targets[member])[scoring.metric_name]
                out[attribute][name] = {"metric": metric, "n": int(member.sum())}
    return out


class Task:
    """A face task. Subclasses set the class attributes and, where needed, override the hooks."""

    name: ClassVar[str]
    #: ``verification``: the network's own embedding is the head; pairs are scored (:mod:`etlbench.verification`).
    kind: ClassVar[Literal["regression", "classification", "verification"]]
    label_key: ClassVar[str]
    num_outputs: ClassVar[int]
    metric_name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    default_dataset: ClassVar[str]
    unit: ClassVar[str] = ""

    # ---- labels -------------------------------------------------------------------------------------
    def require_labels(self, arrays: dict[str, np.ndarray]) -> None:
        """:class:`MissingLabels` (a :class:`LabelError`) where the dataset lacks the task's label array."""
        if self.label_key not in arrays:
            raise MissingLabels(f"missing label array {self.label_key!r} (task {self.name} needs it)")

    def sample_mask(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Which samples the task uses (all by default)."""
        return np.ones(len(arrays["images"]), dtype=bool)

    def targets(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The label array, checked: float32 N x k for regression, int64 N for classification."""
        self.require_labels(arrays)
        y = np.asarray(arrays[self.label_key])
        n = len(arrays["images"])
        if len(y) != n:
            raise LabelError(f"label array {self.label_key!r} has {len(y)} rows but 'images' has {n}")
        if not np.issubdtype(y.dtype, np.number) and y.dtype != bool:
            raise LabelError(f"label array {self.label_key!r} has dtype {y.dtype}; expected numbers")
        if self.kind == "classification":
            if y.ndim != 1 or (np.issubdtype(y.dtype, np.floating) and not np.all(y == np.round(y))):
                raise LabelError(f"label array {self.label_key!r} must be N integer class indices, "
                                 f"got shape {y.shape} dtype {y.dtype}")
            y = y.astype(np.int64)
            bad = (y < 0) | (y >= self.num_outputs)
            if bad.any():
                raise LabelError(f"label array {self.label_key!r}: {int(bad.sum())} value(s) outside "
                                 f"0..{self.num_outputs - 1}, e.g. {y[bad][0]} at row {int(np.flatnonzero(bad)[0])}")
            return y
        y = y.astype(np.float32).reshape(n, -1)
        if y.shape[1] != self.num_outputs:
            raise LabelError(f"label array {self.label_key!r} has shape {arrays[self.label_key].shape}; "
                             f"expected {self.num_outputs} value(s) per sample")
        lo, hi = self.valid_range
        mask = self.sample_mask(arrays)
        bad = ~np.isfinite(y).all(1) | (y < lo).any(1) | (y > hi).any(1)
        bad &= mask
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise LabelError(f"label array {self.label_key!r}: {int(bad.sum())} row(s) outside [{lo}, {hi}] or "
                             f"not finite, e.g. {y[i].tolist()} at row {i}")
        return y

    valid_range: ClassVar[tuple[float, float]] = (-np.inf, np.inf)

    def groups(self, arrays: dict[str, np.ndarray]) -> dict[str, Groups]:
        """The subgroups the task's metric is also reported for, where the dataset labels them (Hooker et al.,
        "Characterising Bias in Compressed Models", 2020): attribute -> groups; none by default."""
        return {}

    def flip_targets(self, y: torch.Tensor) -> torch.Tensor:
        """Targets of horizontally flipped images (unchanged unless the label has a left/right sense)."""
        return y

    def batch_order(self, order: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The order in which training reads the images of ``order`` (a seeded permutation), batch after batch:
        ``order`` itself unless the loss needs images grouped (verification's pairs)."""
        return order

    # ---- model --------------------------------------------------------------------------------------
    def make_head(self, in_channels: int, train_targets: np.ndarray) -> TaskHead:
        if self.kind == "regression":
            return TaskHead(in_channels, self.num_outputs, train_targets.mean(0), train_targets.std(0) + 1e-6)
        return TaskHead(in_channels, self.num_outputs)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.kind == "regression":
            return F.smooth_l1_loss(outputs, targets)
        return F.cross_entropy(outputs, targets)

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        """Matching a teacher's outputs (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015):
        KL divergence of the temperature-softened class distributions, scaled by T^2; for regression (and
        embeddings), the smooth L1 loss against the teacher's outputs (output matching)."""
        if self.kind != "classification":
            return F.smooth_l1_loss(outputs, teacher)
        t = temperature
        return F.kl_div(F.log_softmax(outputs / t, 1), F.log_softmax(teacher / t, 1), log_target=True,
                        reduction="batchmean") * t * t

    # ---- metrics ------------------------------------------------------------------------------------
    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        return outputs.argmax(1) if self.kind == "classification" else outputs

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """All metrics of the task; ``metric_name`` is the primary one."""
        raise NotImplementedError

    def scoring(self, arrays: dict[str, np.ndarray]) -> Scoring:
        """How this task's model is scored on ``arrays`` (another dataset of the task): as on its own data unless a
        task reconciles another label coding; :class:`MissingLabels` where the dataset has no labels for it."""
        self.require_labels(arrays)
        return Scoring(self.targets(arrays), self.predictions, self.evaluate, self.metric_name, self.higher_is_better)

    def describe(self) -> str:
        arrow = "higher is better" if self.higher_is_better else "lower is better"
        return f"{self.metric_name} ({arrow}); labels {self.label_key!r}; default dataset {self.default_dataset}"
