"""Tests of the procedural synthetic face dataset: format, determinism, splits, pairs, and label quality.

Label quality is checked both ways: no label is readable from any single pixel, yet every label is
learnable from all pixels by a linear model (ridge on colour thumbnails + HOG-like gradient histograms).
"""

from __future__ import annotations

import numpy as np
import pytest

from etlbench.data.synthetic import EMOTIONS, N_FOLDS, make_synthetic_faces

N = 2000


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return make_synthetic_faces(N, size=64, seed=1)


# ------------------------------------------------------------------------------------------ format & splits


def test_shapes_dtypes_and_ranges(data: dict[str, np.ndarray]) -> None:
    expected = {
        "images": (np.uint8, (N, 64, 64, 3)),
        "split": (np.uint8, (N,)),
        "pose": (np.float32, (N, 3)),
        "pose_valid99": (np.bool_, (N,)),
        "label": (np.int64, (N,)),
        "age": (np.float32, (N,)),
        "gender": (np.uint8, (N,)),
        "identity": (np.int64, (N,)),
        "synthetic": (np.bool_, ()),
    }
    for key, (dtype, shape) in expected.items():
        assert data[key].dtype == dtype and data[key].shape == shape, key
    assert bool(data["synthetic"]) and data["pose_valid99"].all()
    assert tuple(data["class_names"]) == EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert set(np.unique(data["split"])) == {0, 1, 2}
    assert set(np.unique(data["label"])) == set(range(7))
    assert set(np.unique(data["gender"])) == {0, 1}
    yaw, pitch, roll = data["pose"].T
    assert np.abs(yaw).max() <= 60 and np.abs(pitch).max() <= 30 and np.abs(roll).max() <= 30
    assert np.abs(yaw).max() > 50  # the range is actually used
    assert 5 <= data["age"].min() < 15 and 70 < data["age"].max() <= 80
    assert data["images"].std() > 30  # not blank


def test_split_fractions_and_identities_do_not_cross(data: dict[str, np.ndarray]) -> None:
    counts = np.bincount(data["split"], minlength=3) / N
    np.testing.assert_allclose(counts, (0.7, 0.1, 0.2), atol=0.05)
    for ident in np.unique(data["identity"]):
        assert len(np.unique(data["split"][data["identity"] == ident])) == 1


def test_identity_fixes_gender_and_roughly_age(data: dict[str, np.ndarray]) -> None:
    for ident in np.unique(data["identity"])[:50]:
        members = data["identity"] == ident
        assert len(np.unique(data["gender"][members])) == 1
        assert np.ptp(data["age"][members]) < 15


@pytest.mark.parametrize("n", [1000, 1500])
def test_every_split_has_all_emotions_and_both_genders(n: int) -> None:
    d = make_synthetic_faces(n, size=16, seed=n)
    for s in (0, 1, 2):
        in_split = d["split"] == s
        assert set(np.unique(d["label"][in_split])) == set(range(7)), s
        assert set(np.unique(d["gender"][in_split])) == {0, 1}, s


def test_verification_pairs(data: dict[str, np.ndarray]) -> None:
    a, b, same, fold = data["pair_a"], data["pair_b"], data["pair_same"], data["pair_fold"]
    assert a.dtype == b.dtype == fold.dtype == np.int64 and same.dtype == np.bool_
    assert len(a) >= 200 and len(a) == len(b) == len(same) == len(fold)
    assert (data["split"][a] == 2).all() and (data["split"][b] == 2).all()
    assert (a != b).all()
    np.testing.assert_array_equal(data["identity"][a] == data["identity"][b], same)
    assert set(np.unique(fold)) == set(range(N_FOLDS))
    for f in range(N_FOLDS):
        assert same[fold == f].sum() == (~same[fold == f]).sum()
    folds_of_identity = {}
    for ident, f in zip(np.concatenate([data["identity"][a], data["identity"][b]]), np.tile(fold, 2), strict=True):
        assert folds_of_identity.setdefault(ident, f) == f  # folds are identity-disjoint
    assert len({tuple(p) for p in np.sort(np.stack([a, b], 1), axis=1)}) == len(a)  # no duplicate pairs


def test_determinism() -> None:
    first, again, other = (make_synthetic_faces(60, size=32, seed=s) for s in (7, 7, 8))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    assert not np.array_equal(first["images"], other["images"])


def test_small_and_custom_arguments() -> None:
    d = make_synthetic_faces(25, size=48, seed=0, n_identities=5, split_fractions=(0.6, 0.2, 0.2))
    assert d["images"].shape == (25, 48, 48, 3)
    assert len(np.unique(d["identity"])) == 5
    assert set(np.unique(d["split"])) <= {0, 1, 2}
    with pytest.raises(ValueError):
        make_synthetic_faces(0)
    with pytest.raises(ValueError):
        make_synthetic_faces(10, n_identities=20)


# ------------------------------------------------------------------------------------------ label quality


def _max_abs_pearson(x: np.ndarray, y: np.ndarray) -> float:
    """The largest |Pearson r| between ``y`` and any column of ``x``."""
    xc = x - x.mean(0)
    yc = y - y.mean()
    r = (xc * yc[:, None]).sum(0) / np.sqrt((xc**2).sum(0) * (yc**2).sum() + 1e-12)
    return float(np.abs(r).max())


def _best_single_pixel_accuracy(pixels: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """Test accuracy of the best one-pixel classifier: 8 intensity bins, each predicting its train majority."""
    n_bins, n_classes, n_pixels = 8, int(y.max()) + 1, pixels.shape[1]
    bins = (pixels >> 5).astype(np.int64)
    cells = (np.arange(n_pixels) * n_bins + bins) * n_classes + y[:, None]
    counts = np.bincount(cells[train].ravel(), minlength=n_pixels * n_bins * n_classes)
    vote = counts.reshape(n_pixels, n_bins, n_classes).argmax(2)
    return float((vote[np.arange(n_pixels), bins[test]] == y[test, None]).mean(0).max())


def test_no_label_is_readable_from_a_single_pixel(data: dict[str, np.ndarray]) -> None:
    pixels = data["images"].reshape(N, -1)
    train, test = data["split"] == 0, data["split"] == 2
    for name, target in (("yaw", data["pose"][:, 0]), ("age", data["age"])):
        assert _max_abs_pearson(pixels.astype(np.float32), target.astype(np.float32)) < 0.5, name
    for name, target, margin in (("gender", data["gender"].astype(np.int64), 0.2), ("emotion", data["label"], 0.12)):
        majority = np.bincount(target[test]).max() / test.sum()
        assert _best_single_pixel_accuracy(pixels, target, train, test) < majority + margin, name


def _hog(gray: np.ndarray, cell: int = 8, n_orient: int = 9) -> np.ndarray:
    """HOG-like features: per-cell histograms of gradient orientation weighted by magnitude, L2-normalised."""
    gy, gx = np.gradient(gray, axis=(1, 2))
    magnitude, angle = np.hypot(gx, gy), np.mod(np.arctan2(gy, gx), np.pi)
    orient = np.minimum((angle / np.pi * n_orient).astype(np.int64), n_orient - 1)
    n, side = len(gray), gray.shape[1] // cell
    hist = np.stack(
        [(magnitude * (orient == k)).reshape(n, side, cell, side, cell).sum((2, 4)) for k in range(n_orient)], axis=-1
    )
    return (hist / (np.linalg.norm(hist, axis=-1, keepdims=True) + 1e-2)).reshape(n, -1)


def _linear_probe_scores(data: dict[str, np.ndarray]) -> dict[str, float]:
    """Test-split scores of one ridge regression (train split) from colour thumbnails + HOG to every label.

    Yaw and age are scored by R^2 (0 = the train-mean predictor), gender and emotion by the accuracy of the
    arg-max over one-hot regression outputs (a ridge classifier).
    """
    n = len(data["images"])
    images = data["images"].astype(np.float32) / 255
    thumbs = images.reshape(n, 16, 4, 16, 4, 3).mean((2, 4)).reshape(n, -1)
    features = np.hstack([thumbs, _hog(images.mean(3))])
    train, test = data["split"] == 0, data["split"] == 2
    features = (features - features[train].mean(0)) / (features[train].std(0) + 1e-6)
    targets = np.column_stack([data["pose"][:, 0], data["age"], np.eye(2)[data["gender"]], np.eye(7)[data["label"]]])
    offset = targets[train].mean(0)
    x = features[train]
    weights = np.linalg.solve(x.T @ x + 1000.0 * np.eye(x.shape[1]), x.T @ (targets[train] - offset))
    pred = features[test] @ weights + offset
    truth = targets[test, :2]
    r2 = 1 - ((pred[:, :2] - truth) ** 2).sum(0) / ((truth - offset[:2]) ** 2).sum(0)
    gender_acc = (pred[:, 2:4].argmax(1) == data["gender"][test]).mean()
    emotion_acc = (pred[:, 4:].argmax(1) == data["label"][test]).mean()
    return {
        "yaw_r2": float(r2[0]),
        "age_r2": float(r2[1]),
        "gender_acc": float(gender_acc),
        "emotion_acc": float(emotion_acc),
    }


def test_every_label_is_learnable_from_all_pixels(data: dict[str, np.ndarray]) -> None:
    scores = _linear_probe_scores(data)
    minimum = {"yaw_r2": 0.4, "age_r2": 0.2, "gender_acc": 0.68, "emotion_acc": 0.25}  # chance: 0, 0, ~0.55, 1/7
    for key, low in minimum.items():
        assert scores[key] > low, f"{key} = {scores[key]:.3f}"
