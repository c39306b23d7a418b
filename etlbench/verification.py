"""Face verification on pairs: the LFW protocol (Huang et al., "Labeled Faces in the Wild", UMass TR 07-49, 2007).

A pair's score is the cosine similarity of its two embeddings. For each of the identity-disjoint folds, the
threshold is the one that maximises accuracy on the other folds, and accuracy is read on the held-out fold; the
result is the mean and standard deviation over folds. ROC AUC and the true-accept rate at a false-accept rate
(TAR at FAR) are read on all pairs pooled, as LFW results usually are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from etlbench.backbones import Preprocess
from etlbench.errors import DatasetError

#: The false-accept rate of the reported TAR. With LFW's 3,000 different-person pairs, 1e-3 is 3 false accepts: a
#: coarse figure, reported because verification papers do.
FAR = 1e-3


@dataclass(frozen=True)
class Verification:
    """The LFW protocol's figures: accuracy per held-out fold (each at the threshold chosen on the other folds),
    ROC AUC and TAR at :data:`FAR` over all pairs."""

    fold_accuracy: tuple[float, ...]
    thresholds: tuple[float, ...]
    auc: float
    tar_at_far: float

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.fold_accuracy))

    @property
    def accuracy_std(self) -> float:
        """Standard deviation over folds (n - 1 in the denominator)."""
        return float(np.std(self.fold_accuracy, ddof=1)) if len(self.fold_accuracy) > 1 else 0.0

    def fields(self) -> dict[str, float]:
        """The result columns of a verification row."""
        return {"accuracy": self.accuracy, "accuracy_std": self.accuracy_std, "auc": self.auc,
                "tar_at_far_1e-3": self.tar_at_far}


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold (``same`` predicted where ``score > threshold``) of highest accuracy on these pairs: the
    midpoint of the gap where it lies, the lowest such gap where several tie."""
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order].astype(np.int64)
    # Predicting "different" for the k lowest scores: correct = different ones among them + same ones above them.
    correct = np.concatenate([[0], np.cumsum(1 - y)]) + y.sum() - np.concatenate([[0], np.cumsum(y)])
    gaps = np.concatenate([[True], s[1:] > s[:-1], [True]])  # a threshold can only fall between distinct scores
    k = int(np.argmax(np.where(gaps, correct, -1)))
    if k == 0:
        return float(s[0] - 1.0)
    if k == len(s):
        return float(s[-1] + 1.0)
    return float((s[k - 1] + s[k]) / 2)


def lfw_protocol(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> Verification:
    """The protocol on pair ``scores`` (higher: more alike), ``same`` (1 same person, 0 not) and each pair's fold.
    A single fold is scored at its own best threshold (optimistic: for validation only)."""
    scores, same, folds = np.asarray(scores, np.float64), np.asarray(same).astype(np.int64), np.asarray(folds)
    if not (len(scores) == len(same) == len(folds)):
        raise ValueError(f"{len(scores)} scores, {len(same)} labels and {len(folds)} folds: one of each per pair")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} pair score(s) are not finite")
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        held_out = folds == fold
        chosen_on = ~held_out if (~held_out).any() else held_out  # one fold alone: its own (optimistic) threshold
        threshold = best_threshold(scores[chosen_on], same[chosen_on])
        accuracies.append(float(((scores[held_out] > threshold) == same[held_out]).mean()))
        thresholds.append(threshold)
    fpr, tpr, _ = roc_curve(same, scores)
    return Verification(tuple(accuracies), tuple(thresholds), float(roc_auc_score(same, scores)),
                        float(tpr[fpr <= FAR].max()))


def pair_scores(embeddings: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of the embeddings of rows ``a`` and ``b`` (an all-zero embedding scores 0)."""
    e = np.asarray(embeddings, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return (e[a] * e[b]).sum(1)


def pairs_of(arrays: dict[str, np.ndarray], source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``pair_a``, ``pair_b``, ``pair_same`` and ``pair_fold`` of a verification dataset, checked."""
    missing = [k for k in ("images", "pair_a", "pair_b", "pair_same", "pair_fold") if k not in arrays]
    if missing:
        raise DatasetError(f"{source}: a verification set needs arrays {missing} (pairs of rows of 'images', "
                           f"1 = same person, and each pair's fold)")
    a, b = np.asarray(arrays["pair_a"]), np.asarray(arrays["pair_b"])
    same, folds = np.asarray(arrays["pair_same"]), np.asarray(arrays["pair_fold"])
    n = len(arrays["images"])
    if not len(a) == len(b) == len(same) == len(folds):
        raise DatasetError(f"{source}: pair_a, pair_b, pair_same and pair_fold must have one entry per pair, got "
                           f"{len(a)}, {len(b)}, {len(same)} and {len(folds)}")
    for key, rows in (("pair_a", a), ("pair_b", b)):
        if not np.issubdtype(rows.dtype, np.integer) or (len(rows) and (rows.min() < 0 or rows.max() >= n)):
            raise DatasetError(f"{source}: {key} must hold row indices of 'images' (0..{n - 1})")
    if not np.isin(same, (0, 1)).all():
        raise DatasetError(f"{source}: pair_same must be 0 or 1 for every pair")
    return a, b, same.astype(np.int64), folds


def verify(network: nn.Module, arrays: dict[str, np.ndarray], preprocess: Preprocess, size: tuple[int, int],
           source: str = "verification set") -> Verification:
    """The LFW protocol for ``network``'s embeddings of a verification set's pairs (only the images they use)."""
    from etlbench.train import predict  # torch only where a network is run

    a, b, same, folds = pairs_of(arrays, source)
    rows, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    embeddings = predict(network, np.asarray(arrays["images"])[rows], preprocess, size)
    return lfw_protocol(pair_scores(embeddings, inverse[: len(a)], inverse[len(a) :]), same, folds)


#: The columns of a split's pair table (``targets`` of a verification split): rows of its images, same, fold.
PAIR_COLUMNS = ("a", "b", "same", "fold")


def split_by_folds(arrays: dict[str, np.ndarray], source: str, train: tuple[int, ...], val: tuple[int, ...],
                   test: tuple[int, ...]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Images and targets per split of a verification set, by folds (LFW's are identity-disjoint): ``train`` holds
    the images of the ``train`` folds' pairs with their identities (0..K-1, for identity or pair training); ``val``
    and ``test`` hold the images of their folds' pairs with the pair table (:data:`PAIR_COLUMNS`, rows of that
    split's images). A fold in two splits, or an identity in train and in val or test, is refused."""
    a, b, same, folds = pairs_of(arrays, source)
    named = {"train": train, "val": val, "test": test}
    known = set(np.unique(folds).tolist())
    for name, chosen in named.items():
        if not chosen or not set(chosen) <= known:
            raise DatasetError(f"{source}: the {name} folds {list(chosen)} must be some of the set's folds "
                               f"{sorted(known)}")
    if len(set(train) | set(val) | set(test)) != len(train) + len(val) + len(test):
        raise DatasetError(f"{source}: a fold is in two splits (train {list(train)}, val {list(val)}, "
                           f"test {list(test)})")
    if "identity" not in arrays:
        raise DatasetError(f"{source}: splitting a verification set needs the array 'identity' (one per image)")
    identity = np.asarray(arrays["identity"])
    images, targets, identities = {}, {}, {}
    for name, chosen in named.items():
        in_split = np.isin(folds, chosen)
        rows, inverse = np.unique(np.concatenate([a[in_split], b[in_split]]), return_inverse=True)
        images[name], identities[name] = np.asarray(arrays["images"])[rows], set(identity[rows].tolist())
        if name == "train":
            targets[name] = np.unique(identity[rows], return_inverse=True)[1].astype(np.int64)
        else:
            n = int(in_split.sum())
            targets[name] = np.stack([inverse[:n], inverse[n:], same[in_split], folds[in_split]], 1).astype(np.int64)
    shared = identities["train"] & (identities["val"] | identities["test"])
    if shared:
        raise DatasetError(f"{source}: {len(shared)} identities are in the train folds and in val or test; "
                           "verification folds must be identity-disjoint")
    return images, targets
