"""The canonical dataset format: clear errors for bad files, and the real datasets load out of the box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from etlbench.backbones import Preprocess
from etlbench.data import DatasetError, dataset_for_task, load_dataset, load_npz, task_data
from etlbench.tasks import create_task


def _arrays(n: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "images": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
        "split": np.tile(np.array([0, 0, 0, 1, 2], np.uint8), n // 5),
        "age": rng.uniform(1, 90, n).astype(np.float32),
        "gender": rng.integers(0, 2, n).astype(np.uint8),
        "label": rng.integers(0, 7, n),
        "pose": rng.uniform(-60, 60, (n, 3)).astype(np.float32),
    }


def _write(tmp_path: Path, **changes: np.ndarray | None) -> Path:
    arrays = _arrays()
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    path = tmp_path / "d.npz"
    np.savez_compressed(path, **arrays)
    return path


def test_valid_file_loads_and_counts_splits(tmp_path: Path) -> None:
    data = load_npz(_write(tmp_path))
    assert data.split_counts() == {"train": 18, "val": 6, "test": 6}
    td = task_data(create_task("age"), data)
    assert td.targets["train"].shape == (18, 1) and td.targets["train"].dtype == np.float32


@pytest.mark.parametrize(("change", "message"), [
    ({"images": None}, "missing array 'images'"),
    ({"images": np.zeros((30, 16, 16, 3), np.float32)}, "'images' must be uint8"),
    ({"images": np.zeros((30, 16, 16), np.uint8)}, "'images' must be uint8 N x H x W x C"),
    ({"split": np.zeros(29, np.uint8)}, "'split' must have one entry per image"),
    ({"split": np.full(30, 3, np.uint8)}, "values other than 0"),
    ({"split": np.zeros(30, np.uint8)}, "the val split (split == 1) is empty"),
])
def test_format_errors_name_file_and_key(tmp_path: Path, change: dict, message: str) -> None:
    path = _write(tmp_path, **change)
    with pytest.raises(DatasetError) as err:
        load_npz(path)
    assert message in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(("task", "change", "message"), [
    ("gender", {"gender": np.full(30, 2, np.uint8)}, "outside 0..1"),
    ("emotion", {"label": np.full(30, -1)}, "outside 0..6"),
    ("age", {"age": np.full(30, 500.0, np.float32)}, "outside [0.0, 130.0]"),
    ("age", {"age": np.ones(29, np.float32)}, "has 29 rows but 'images' has 30"),
    ("head_pose", {"pose": np.ones((30, 2), np.float32)}, "expected 3 value(s) per sample"),
    ("head_pose", {"pose": np.full((30, 3), np.nan, np.float32)}, "not finite"),
    ("emotion", {"label": None}, "missing label array 'label'"),
    ("age", {"split": None}, "no 'split' array (train/val/test), which task age needs"),
])
def test_label_errors_name_file_and_key(tmp_path: Path, task: str, change: dict, message: str) -> None:
    path = _write(tmp_path, **change)
    with pytest.raises(DatasetError) as err:
        task_data(create_task(task), load_npz(path))
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="file not found"):
        load_npz(tmp_path / "absent.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable npz"):
        load_npz(bad)


def test_real_dataset_without_data_root(no_data_root: None) -> None:
    with pytest.raises(DatasetError, match="needs a data root"):
        load_dataset("utkface")


def test_no_data_root_means_synthetic(no_data_root: None) -> None:
    task = create_task("gender")
    assert dataset_for_task(task) == "synthetic"
    data = load_dataset("synthetic", seed=0)
    assert data.synthetic and "SYNTHETIC" in data.notes[0]


def test_max_train_is_a_seeded_subset(tmp_path: Path) -> None:
    data = load_npz(_write(tmp_path))
    a = task_data(create_task("gender"), data, max_train=10, seed=1)
    b = task_data(create_task("gender"), data, max_train=10, seed=1)
    assert len(a.images["train"]) == 10
    np.testing.assert_array_equal(a.images["train"], b.images["train"])


def test_grayscale_is_expanded_and_resized() -> None:
    pre = Preprocess(input_size=(40, 40), mean=(1.0, 2.0, 3.0), std=(2.0, 2.0, 2.0), min_size=20)
    gray = torch.full((2, 24, 24, 1), 9, dtype=torch.uint8)
    x = pre(gray)
    assert x.shape == (2, 3, 40, 40)
    torch.testing.assert_close(x[:, :, 5, 5], torch.tensor([[4.0, 3.5, 3.0]] * 2))
    with pytest.raises(ValueError, match="below this backbone's minimum"):
        pre(gray, (10, 10))


EXPECTED = {  # counts per split from each dataset's MANIFEST.md
    "aflw2000": {"train": 1400, "val": 200, "test": 400},
    "fer2013": {"train": 8000, "val": 3589, "test": 3589},
    "utkface": {"train": 5600, "val": 800, "test": 1600},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_datasets_load_out_of_the_box(real_data_root: Path, name: str) -> None:
    data = load_dataset(name, real_data_root)
    assert data.split_counts() == EXPECTED[name]
    for task_name in ("head_pose", "emotion", "age", "gender"):
        task = create_task(task_name)
        if task.default_dataset == name:
            td = task_data(task, data)
            assert min(len(v) for v in td.images.values()) > 0


def test_head_pose_uses_the_99_degree_subset(real_data_root: Path) -> None:
    td = task_data(create_task("head_pose"), load_dataset("aflw2000", real_data_root))
    assert (len(td.images["train"]), len(td.images["val"]), len(td.images["test"])) == (1378, 194, 397)
    assert np.abs(td.targets["test"]).max() <= 99
