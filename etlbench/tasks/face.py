"""The four face tasks of the ETL paper: head pose, emotion, age and gender."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from etlbench.tasks.base import Task


def mean_absolute_error(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(predictions, np.float64) - targets).mean(0)


def accuracy(predictions: np.ndarray, targets: np.ndarray) -> float:
    return float((predictions == targets).mean())


def macro_f1(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in the targets."""
    scores = []
    for c in np.unique(targets):
        tp = np.sum((predictions == c) & (targets == c))
        fp = np.sum((predictions == c) & (targets != c))
        fn = np.sum((predictions != c) & (targets == c))
        scores.append(2 * tp / max(2 * tp + fp + fn, 1))
    return float(np.mean(scores))


class HeadPose(Task):
    """Head pose (yaw, pitch, roll in degrees), evaluated on the standard |angle| <= 99 deg subset (AFLW2000-3D)."""

    name = "head_pose"
    kind = "regression"
    label_key = "pose"
    num_outputs = 3
    metric_name = "mae_deg"
    higher_is_better = False
    default_dataset = "aflw2000"
    unit = "deg"
    valid_range = (-180.0, 180.0)
    angles: ClassVar[tuple[str, ...]] = ("yaw", "pitch", "roll")

    def sample_mask(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        if "pose_valid99" in arrays:
            return np.asarray(arrays["pose_valid99"]).astype(bool)
        return super().sample_mask(arrays)

    def flip_targets(self, y: torch.Tensor) -> torch.Tensor:
        """A mirrored face turns the other way: yaw and roll change sign, pitch does not."""
        return y * torch.tensor([-1.0, 1.0, -1.0], dtype=y.dtype)

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        per_angle = mean_absolute_error(predictions, targets)
        out = {self.metric_name: float(per_angle.mean())}
        out.update({f"mae_{a}_deg": float(v) for a, v in zip(self.angles, per_angle, strict=True)})
        return out


class Emotion(Task):
    """Facial expression, 7 classes in FER2013 order (angry, disgust, fear, happy, sad, surprise, neutral)."""

    name = "emotion"
    kind = "classification"
    label_key = "label"
    num_outputs = 7
    metric_name = "accuracy"
    higher_is_better = True
    default_dataset = "fer2013"

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {"accuracy": accuracy(predictions, targets),
                "macro_f1": macro_f1(predictions, targets)}


class Age(Task):
    """Apparent/real age in years (UTKFace), mean absolute error."""

    name = "age"
    kind = "regression"
    label_key = "age"
    num_outputs = 1
    metric_name = "mae_years"
    higher_is_better = False
    default_dataset = "utkface"
    unit = "years"
    valid_range = (0.0, 130.0)

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {self.metric_name: float(mean_absolute_error(predictions, targets).mean())}


class Gender(Task):
    """Gender as labelled in UTKFace (0 male, 1 female), accuracy."""

    name = "gender"
    kind = "classification"
    label_key = "gender"
    num_outputs = 2
    metric_name = "accuracy"
    higher_is_better = True
    default_dataset = "utkface"

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {"accuracy": accuracy(predictions, targets)}
