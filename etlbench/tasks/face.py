"""The four face tasks of the ETL paper (head pose, emotion, age and gender) and face verification (Grundstrom
et al.)."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch

from etlbench.errors import LabelError
from etlbench.tasks.base import Groups, Scoring, Task, band_groups, label_groups


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

    def groups(self, arrays: dict[str, np.ndarray]) -> dict[str, Groups]:
        """By |yaw| band (< 30, 30-60, >= 60 degrees)."""
        if self.label_key not in arrays:
            return {}
        return {"abs_yaw": band_groups(np.abs(np.asarray(arrays[self.label_key])[:, 0]), (30, 60), "deg")}

    def flip_targets(self, y: torch.Tensor) -> torch.Tensor:
        """A mirrored face turns the other way: yaw and roll change sign, pitch does not."""
        return y * torch.tensor([-1.0, 1.0, -1.0], dtype=y.dtype, device=y.device)

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        per_angle = mean_absolute_error(predictions, targets)
        out = {self.metric_name: float(per_angle.mean())}
        out.update({f"mae_{a}_deg": float(v) for a, v in zip(self.angles, per_angle, strict=True)})
        return out


def _names(arrays: dict[str, np.ndarray], key: str) -> list[str] | None:
    """A dataset's names of its label values (``key``), lower case, or ``None`` where it has none."""
    return [str(n).strip().lower() for n in np.asarray(arrays[key]).reshape(-1)] if key in arrays else None


def recoded(labels: np.ndarray, names: list[str], vocabulary: dict[str, int], key: str, expected: str) -> np.ndarray:
    """``labels`` (indices into ``names``) recoded to a task's classes by name (``vocabulary``: name -> class)."""
    unknown = sorted({n for n in names if n not in vocabulary})
    if unknown:
        raise LabelError(f"{key}: cannot reconcile the class name(s) {unknown} with this task's classes "
                         f"(expected {expected}); drop those images from the file to score the others")
    lookup = np.array([vocabulary[n] for n in names], np.int64)
    labels = np.asarray(labels).astype(np.int64)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(lookup):
        raise LabelError(f"{key}: labels outside 0..{len(lookup) - 1}, the names it has")
    return lookup[labels]


EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
_EMOTION_NAMES = {**{e: i for i, e in enumerate(EMOTIONS)}, "anger": 0, "disgusted": 1, "fearful": 2, "scared": 2,
                  "happiness": 3, "sadness": 4, "surprised": 5}


class Emotion(Task):
    """Facial expression, 7 classes in FER2013 order (angry, disgust, fear, happy, sad, surprise, neutral)."""

    name = "emotion"
    kind = "classification"
    label_key = "label"
    num_outputs = 7
    metric_name = "accuracy"
    higher_is_better = True
    default_dataset = "fer2013"

    def groups(self, arrays: dict[str, np.ndarray]) -> dict[str, Groups]:
        """Per emotion class (the accuracy of a class is its recall)."""
        found = label_groups(arrays, self.label_key, "class_names")
        return {"class": found} if found else {}

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {"accuracy": accuracy(predictions, targets),
                "macro_f1": macro_f1(predictions, targets)}

    def scoring(self, arrays: dict[str, np.ndarray]) -> Scoring:
        """Another dataset's classes are matched to FER2013's by name (``class_names``; "happiness" is happy);
        where it has fewer classes, predictions are the best of the classes it has."""
        names = _names(arrays, "class_names")
        if names is None:
            return replace(super().scoring(arrays), note="no class_names: labels read in FER2013's coding")
        self.require_labels(arrays)
        targets = recoded(arrays[self.label_key], names, _EMOTION_NAMES, "class_names", ", ".join(EMOTIONS))
        present = np.unique(targets)
        if len(present) == len(EMOTIONS):
            return Scoring(targets, self.predictions, self.evaluate, self.metric_name, True)

        def among_present(outputs: np.ndarray) -> np.ndarray:
            return present[outputs[:, present].argmax(1)]

        missing = [EMOTIONS[i] for i in range(len(EMOTIONS)) if i not in present]
        return Scoring(targets, among_present, self.evaluate, self.metric_name, True,
                       f"scored on the {len(present)} classes it has (predictions among them); missing: "
                       f"{', '.join(missing)}")


_RANGE = (re.compile(r"^\(?\s*(\d+)\s*(?:-|–|,|to)\s*(\d+)\s*\)?$"),  # 20-29, (25, 32), 20 to 29
          re.compile(r"^(?:(\d+)\s*\+|more than\s*(\d+)|over\s*(\d+)|>=?\s*(\d+))$"))  # 70+, more than 70


def age_ranges(names: list[str], key: str = "age_group_names") -> np.ndarray:
    """The [low, high] years (inclusive; high may be inf) of age-group names such as ``0-2``, ``(25, 32)``,
    ``70+`` or ``more than 70``."""
    out = []
    for name in names:
        closed, open_ = _RANGE[0].match(name), _RANGE[1].match(name)
        if closed and float(closed[1]) <= float(closed[2]):
            out.append((float(closed[1]), float(closed[2])))
        elif open_:
            out.append((float(next(g for g in open_.groups() if g)), np.inf))
        else:
            raise LabelError(f"{key}: cannot read {name!r} as an age range in years "
                             f"(expected e.g. '20-29', '(25, 32)', '70+' or 'more than 70')")
    return np.array(out)


def age_group_of(ages: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """The age group each age falls in, or the nearest group where it falls between two."""
    a = np.asarray(ages, np.float64).reshape(-1, 1)
    return np.maximum(np.maximum(ranges[:, 0] - a, 0), a - ranges[:, 1]).argmin(1)


AGE_BANDS = (18, 30, 45, 60)  # years: children, young adults, adults, middle-aged, seniors


def demographic_groups(arrays: dict[str, np.ndarray], age_bands: bool) -> dict[str, Groups]:
    """UTKFace's own labels: race (5 groups) and gender, and (``age_bands``) age bands where the dataset has ages."""
    found = {key: label_groups(arrays, key) for key in ("race", "gender")}
    if age_bands and "age" in arrays and "age_names" not in arrays:  # years, not age-group labels
        found["age_band"] = band_groups(np.asarray(arrays["age"]), AGE_BANDS, "years")
    return {k: v for k, v in found.items() if v is not None}


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

    def groups(self, arrays: dict[str, np.ndarray]) -> dict[str, Groups]:
        """By race and gender (UTKFace's labels)."""
        return demographic_groups(arrays, age_bands=False)

    def scoring(self, arrays: dict[str, np.ndarray]) -> Scoring:
        """Ages in years are scored as on UTKFace; a dataset of age groups instead (``age_group`` with
        ``age_group_names`` such as ``20-29``, or ``age`` with ``age_names``: group labels, as ``etlbench data
        prepare folder --label-key age`` writes them) as the accuracy of the group the predicted age falls in."""
        key = "age_group" if "age_group" in arrays else "age" if "age_names" in arrays else None
        if key is None:
            return super().scoring(arrays)
        if f"{key}_names" not in arrays:
            raise LabelError(f"{key}: the groups need their ranges in an array '{key}_names' (e.g. '20-29')")
        ranges = age_ranges(_names(arrays, f"{key}_names"), f"{key}_names")
        groups = label_groups(arrays, key)
        if groups.labels.max(initial=0) >= len(ranges):
            raise LabelError(f"{key}: values outside 0..{len(ranges) - 1}, the groups '{key}_names' names")

        def predicted_group(outputs: np.ndarray) -> np.ndarray:
            return age_group_of(outputs[:, 0], ranges)

        def evaluate(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
            return {"age_group_accuracy": accuracy(predictions, targets)}

        return Scoring(groups.labels, predicted_group, evaluate, "age_group_accuracy", True,
                       f"scored as age-group accuracy over {len(ranges)} groups ({', '.join(groups.names)}): the "
                       f"predicted age's group, or the nearest")

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {self.metric_name: float(mean_absolute_error(predictions, targets).mean())}


_GENDER_NAMES = {"male": 0, "m": 0, "man": 0, "men": 0, "female": 1, "f": 1, "woman": 1, "women": 1}


class Gender(Task):
    """Gender as labelled in UTKFace (0 male, 1 female), accuracy."""

    name = "gender"
    kind = "classification"
    label_key = "gender"
    num_outputs = 2
    metric_name = "accuracy"
    higher_is_better = True
    default_dataset = "utkface"

    def groups(self, arrays: dict[str, np.ndarray]) -> dict[str, Groups]:
        """By race, gender and age band (UTKFace's labels)."""
        return demographic_groups(arrays, age_bands=True)

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {"accuracy": accuracy(predictions, targets)}

    def scoring(self, arrays: dict[str, np.ndarray]) -> Scoring:
        """Another dataset's genders are matched to UTKFace's coding (0 male, 1 female) by ``gender_names``."""
        names = _names(arrays, "gender_names")
        if names is None or self.label_key not in arrays:
            return super().scoring(arrays)
        targets = recoded(arrays[self.label_key], names, _GENDER_NAMES, "gender_names", "male and female")
        coding = ", ".join(f"{i} {n}" for i, n in enumerate(names))
        return Scoring(super().scoring({**arrays, self.label_key: targets}).targets, self.predictions, self.evaluate,
                       self.metric_name, True, f"genders matched by name ({coding}) to 0 male, 1 female")


class Verification(Task):
    """Face verification on pairs (LFW protocol), the network's own embedding as the head, trained on the train
    folds' identities with the contrastive loss (Grundstrom et al., ICIAR 2016; Hadsell et al., CVPR 2006).

    Splits come from the pair folds (:func:`etlbench.verification.split_by_folds`): the images of folds 0-3 with
    their identities train, fold 4's pairs validate, folds 5-9's pairs test (one half of a two-half protocol; the
    other is :class:`VerificationReverse`). A pair's score is the cosine similarity of its embeddings; test accuracy
    is the mean over the test folds, each at the threshold chosen on the others; a single val fold is read at its
    own best threshold (optimistic, for selection only).
    """

    name = "verification"
    kind = "verification"
    label_key = "identity"
    num_outputs = 0  # the source network's embedding width
    metric_name = "accuracy"
    higher_is_better = True
    default_dataset = "lfw_pairs"
    folds: ClassVar[dict[str, tuple[int, ...]]] = {"train": (0, 1, 2, 3), "val": (4,), "test": (5, 6, 7, 8, 9)}
    #: Of the contrastive loss, on L2-normalised embeddings (distances in [0, 2]; 1 is a cosine similarity of 0.5).
    margin: ClassVar[float] = 1.0

    def batch_order(self, order: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """``order`` regrouped into twos, in the order of their first image: two images of one identity where it has
        them (a positive pair for the loss), else two identities' odd images, so that no two stay apart across a
        batch boundary (batch sizes are even)."""
        by_identity: dict[int, list[int]] = {}
        for i in order.tolist():
            by_identity.setdefault(int(targets[i]), []).append(i)
        units, odd = [], []
        for members in by_identity.values():
            units += [members[k : k + 2] for k in range(0, len(members) - 1, 2)]
            odd += members[-1:] if len(members) % 2 else []
        units += [odd[k : k + 2] for k in range(0, len(odd) - 1, 2)]
        rank = np.empty(len(targets), np.int64)
        rank[order] = np.arange(len(order))
        units.sort(key=lambda unit: rank[unit[0]])
        last = odd[-1:] if len(odd) % 2 else []  # a lone image goes last, where it shifts no pair
        return np.array([i for unit in units for i in unit] + last, dtype=np.int64)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Contrastive loss over every pair of the batch, the same-identity and the different-identity pairs
        averaged apart and added (a batch holds few positives): ``d^2`` for the same, ``max(0, margin - d)^2`` for
        different identities, ``d`` the distance of L2-normalised embeddings (Hadsell, Chopra, LeCun, CVPR 2006)."""
        e = torch.nn.functional.normalize(outputs, dim=1)
        d = torch.cdist(e, e).clamp_min(1e-12)
        i, j = torch.triu_indices(len(e), len(e), offset=1, device=e.device)
        d, same = d[i, j], targets[i] == targets[j]
        loss = torch.clamp(self.margin - d[~same], min=0).pow(2).mean() if (~same).any() else d.sum() * 0
        return loss + (d[same].pow(2).mean() if same.any() else 0)

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """``predictions``: the embeddings of a split's images; ``targets``: its pair table (a, b, same, fold)."""
        from etlbench.verification import lfw_protocol, pair_scores  # scikit-learn only when evaluating

        scores = pair_scores(predictions, targets[:, 0], targets[:, 1])
        return lfw_protocol(scores, targets[:, 2], targets[:, 3]).fields()


class VerificationReverse(Verification):
    """The other half of :class:`Verification`'s two-half protocol (Grundstrom et al., ICIAR 2016, issue 16): folds
    5-8 train, 9 validates, 0-4 test. With the first half, every fold of the ten is tested once, by a model that
    never saw its identities; the two halves' test accuracies together give the 10-fold figure."""

    name = "verification_reverse"
    folds: ClassVar[dict[str, tuple[int, ...]]] = {"train": (5, 6, 7, 8), "val": (9,), "test": (0, 1, 2, 3, 4)}
