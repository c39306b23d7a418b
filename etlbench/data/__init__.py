"""Datasets: the canonical npz format, the real face datasets, and synthetic faces.

Importing the package stays light (numpy, no torch: ``etlbench list datasets`` reads files with :func:`load_npz`);
the loading and per-task view of :mod:`etlbench.data.datasets` (torch) is imported on first use of its names."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from etlbench.data.canonical import SPLITS, DatasetError, FaceData, load_npz
from etlbench.registry import DATASETS

if TYPE_CHECKING:
    from etlbench.data.datasets import TaskData, dataset_for_task, load_dataset, task_data

_FROM_DATASETS = ("TaskData", "dataset_for_task", "load_dataset", "task_data")


def __getattr__(name: str) -> Any:
    if name in _FROM_DATASETS:
        return getattr(importlib.import_module("etlbench.data.datasets"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DATASETS", "SPLITS", "DatasetError", "FaceData", "TaskData", "dataset_for_task", "load_dataset",
           "load_npz", "task_data"]
