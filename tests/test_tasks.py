"""Each task owns its head, loss, metrics and direction; head pose mirrors yaw and roll."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, mean_absolute_error

from etlbench.data import load_dataset
from etlbench.tasks import create_task


def test_directions_and_metric_names() -> None:
    expected = {"head_pose": ("mae_deg", False), "emotion": ("accuracy", True), "age": ("mae_years", False),
                "gender": ("accuracy", True)}
    for name, (metric, higher) in expected.items():
        task = create_task(name)
        assert (task.metric_name, task.higher_is_better) == (metric, higher)


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    m = create_task("emotion").evaluate(p, y)
    assert m["accuracy"] == pytest.approx((p == y).mean())
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    yr, pr = rng.normal(size=(100, 3)) * 30, rng.normal(size=(100, 3)) * 30
    pose = create_task("head_pose").evaluate(pr, yr)
    assert pose["mae_deg"] == pytest.approx(mean_absolute_error(yr, pr))
    assert pose["mae_yaw_deg"] == pytest.approx(np.abs(yr[:, 0] - pr[:, 0]).mean())


def test_regression_head_outputs_real_units() -> None:
    task = create_task("age")
    y = np.array([[20.0], [40.0], [60.0]], np.float32)
    head = task.make_head(8, y)
    torch.nn.init.zeros_(head.fc.weight)
    torch.nn.init.zeros_(head.fc.bias)
    out = head(torch.randn(2, 8, 3, 3))
    torch.testing.assert_close(out, torch.full((2, 1), 40.0))
    assert create_task("gender").make_head(8, np.zeros(3, np.int64)).fc.out_features == 2


def test_flip_negates_yaw_and_roll_only() -> None:
    y = torch.tensor([[10.0, 20.0, 30.0]])
    torch.testing.assert_close(create_task("head_pose").flip_targets(y), torch.tensor([[-10.0, 20.0, -30.0]]))
    torch.testing.assert_close(create_task("age").flip_targets(y[:, :1]), y[:, :1])


def test_flip_convention_agrees_with_real_faces(real_data_root: Path) -> None:
    """On AFLW2000-3D, yaw anti-correlates with the nose's offset from the eye midpoint; mirroring the faces
    (landmarks x -> W - x) and their labels (flip_targets) must keep that relation."""
    data = load_dataset("aflw2000", real_data_root)
    lm, pose = data.arrays["landmarks68"], torch.from_numpy(data.arrays["pose"])
    valid = data.arrays["pose_valid99"]

    def corr(landmarks: np.ndarray, yaw: np.ndarray) -> float:
        offset = landmarks[:, 30, 0] - landmarks[:, 36:48, 0].mean(1)  # nose tip minus eye centre, x
        return float(np.corrcoef(offset[valid], yaw[valid])[0, 1])

    mirrored = lm.copy()
    mirrored[..., 0] = data.images.shape[2] - mirrored[..., 0]
    flipped_yaw = create_task("head_pose").flip_targets(pose)[:, 0].numpy()
    assert corr(lm, pose[:, 0].numpy()) < -0.8
    assert corr(mirrored, flipped_yaw) < -0.8
