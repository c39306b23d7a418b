"""Datasets: the canonical npz format, the real face datasets, and synthetic faces."""

from etlbench.data.canonical import SPLITS, DatasetError, FaceData, load_npz
from etlbench.data.datasets import DATASETS, TaskData, dataset_for_task, load_dataset, task_data

__all__ = ["DATASETS", "SPLITS", "DatasetError", "FaceData", "TaskData", "dataset_for_task", "load_dataset",
           "load_npz", "task_data"]
