"""Linear probes on the frozen source network: the floor every transfer must beat, and ETL's cross-task probes.

The features of a cut point are the spatial means of its activation maps (one value per filter), as in
John et al., "Low-Cost Transfer Learning of Face Tasks" (arXiv 1901.02675). Probes are ridge regression for
regression tasks and multinomial logistic regression for classification, on standardised features, with
the regularisation chosen by cross-validation on the training split only.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from etlbench.backbones import Preprocess, SourceNetwork
from etlbench.data import TaskData
from etlbench.measure import eval_mode
from etlbench.tasks import Task, TaskHead
from etlbench.tasks.face import accuracy
from etlbench.train import iterate_batches, model_device

ALPHAS = np.logspace(-2, 5, 15)
CS = np.logspace(-4, 2, 7)
# The solver tolerance of the probes that ETL and recovery fit: on 7-class emotion it made the cross-validation
# 4x faster than 1e-4 (55 s -> 14 s on 2 cores) and chose the same regularisation.
PROBE_TOL = 1e-3


class FlooredScaler(StandardScaler):
    """Standardisation that divides no feature by less than ``floor`` times the mean feature standard deviation,
    so that nearly constant features (dead filters of a pruned network) cannot get huge weights."""

    def __init__(self, floor: float = 0.0):
        super().__init__()
        self.floor = floor

    def fit(self, X: np.ndarray, y: object = None, sample_weight: object = None) -> FlooredScaler:
        super().fit(X, y, sample_weight)
        if self.floor > 0:
            self.scale_ = np.maximum(self.scale_, self.floor * np.sqrt(self.var_).mean())
        return self


def fit_probe(task: Task, features: np.ndarray, targets: np.ndarray, seed: int = 0,
              strength: float | None = None, tol: float = 1e-4, scale_floor: float = 0.0) -> Pipeline:
    """A standardised linear probe. Its regularisation is ``strength`` (ridge alpha, or logistic C) when given,
    else chosen by cross-validation on these (training) samples (5-fold for logistic regression, efficient
    leave-one-out for ridge) (:func:`probe_strength` reads it back).
    ``tol`` is the logistic solver's stopping tolerance; ``scale_floor`` see :class:`FlooredScaler`."""
    if task.kind == "regression":
        model = RidgeCV(alphas=ALPHAS) if strength is None else Ridge(alpha=strength)
    elif strength is None:
        model = LogisticRegressionCV(Cs=CS, cv=5, max_iter=2000, tol=tol, scoring="accuracy", random_state=seed)
    else:
        model = LogisticRegression(C=strength, max_iter=2000, tol=tol, random_state=seed)
    with warnings.catch_warnings():  # scikit-learn 1.9 announces default changes that do not apply here
        warnings.simplefilter("ignore", FutureWarning)
        return make_pipeline(FlooredScaler(scale_floor), model).fit(features, targets)


def probe_strength(probe: Pipeline) -> float:
    """The regularisation a fitted probe used (chosen by cross-validation or given): ridge alpha or logistic C."""
    model = probe[-1]
    if hasattr(model, "alpha_"):
        return float(model.alpha_)
    if hasattr(model, "C_"):
        return float(np.ravel(model.C_)[0])
    return float(model.alpha if hasattr(model, "alpha") else model.C)


@dataclass
class ProbeResult:
    """Test metrics of a linear probe at one cut point, and its cost."""

    cut: str
    metrics: dict[str, float]
    val_metrics: dict[str, float]
    feature_seconds: float
    fit_seconds: float
    samples: int
    probe: Pipeline


@torch.no_grad()
def head_from_probe(head: TaskHead, probe: Pipeline, task: Task) -> None:
    """Set a task head (pool + linear, see :class:`TaskHead`) to compute the fitted probe exactly.

    This is the linear-probe-then-fine-tune recipe (Kumar et al., "Fine-Tuning can Distort Pretrained
    Features and Underperform Out-of-Distribution", ICLR 2022): fine-tuning starts from the probe's solution.
    """
    scaler, model = probe[0], probe[-1]
    w = np.asarray(model.coef_, np.float64).reshape(-1, len(scaler.mean_)) / scaler.scale_
    b = np.asarray(model.intercept_, np.float64).reshape(-1) - w @ scaler.mean_
    if task.kind == "classification":
        full_w, full_b = np.zeros((task.num_outputs, w.shape[1])), np.full(task.num_outputs, -1e4)
        classes = np.asarray(model.classes_)
        if len(classes) == 2:  # scikit-learn keeps one row for two classes: logit(class 1) - logit(class 0)
            w, b = np.vstack([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
        full_w[classes], full_b[classes] = w, b
        w, b = full_w, full_b
    else:
        scale, shift = head.scale.double().cpu().numpy(), head.shift.double().cpu().numpy()
        w, b = w / scale[:, None], (b - shift) / scale
    head.fc.weight.copy_(torch.from_numpy(w))
    head.fc.bias.copy_(torch.from_numpy(b))


@torch.inference_mode()
def trunk_features(trunk: torch.nn.Module, images: np.ndarray, preprocess: Preprocess, size: tuple[int, int],
                   batch_size: int = 64) -> np.ndarray:
    """Spatial-mean descriptors (N x channels) of a trunk's output (the source's up to a cut, or a pruned
    one), in eval mode; every module's train/eval flag is restored afterwards."""
    with eval_mode(trunk):
        device = model_device(trunk)
        out = [trunk(preprocess(torch.from_numpy(images[b]), size).to(device)).mean(dim=(2, 3)).cpu()
               for b in iterate_batches(images, batch_size)]
    return torch.cat(out).double().numpy()


def linear_probe(source: SourceNetwork, data: TaskData, size: tuple[int, int], cut: str | None = None,
                 seed: int = 0) -> ProbeResult:
    """The frozen-backbone linear probe at ``cut`` (the last block by default), scored on val and test."""
    cut = cut or [p.name for p in source.cut_points()][-1]
    start = time.perf_counter()
    feats = {s: trunk_features(source.trunk(cut), data.images[s], source.preprocess, size)
             for s in ("train", "val", "test")}
    feature_seconds = time.perf_counter() - start
    start = time.perf_counter()
    probe = fit_probe(data.task, feats["train"], data.targets["train"], seed)
    fit_seconds = time.perf_counter() - start
    task = data.task

    def score(split: str) -> dict[str, float]:
        return task.evaluate(task.predictions(probe_outputs(probe, task, feats[split])), data.targets[split])

    return ProbeResult(cut, score("test"), score("val"), feature_seconds, fit_seconds, len(feats["train"]), probe)


def probe_outputs(probe: Pipeline, task: Task, features: np.ndarray) -> np.ndarray:
    """Outputs shaped like a task head's: values for regression, class probabilities (all classes) otherwise."""
    if task.kind == "regression":
        return np.asarray(probe.predict(features)).reshape(len(features), -1)
    out = np.zeros((len(features), task.num_outputs))
    out[:, probe.classes_] = probe.predict_proba(features)  # classes absent from training get probability 0
    return out


#: At most this many same-identity pairs per identity (all pairs of 10 images), so that a set with many images of
#: a few people neither lets them dominate the probe nor makes the pairs grow with the square of their images.
PAIRS_PER_IDENTITY = 45


class SamePerson(Task):
    """What a probe of a verification task predicts (ETL's probes, issue 16): whether two images show the same
    person, from the absolute difference of their per-filter descriptors. Not a registered task."""

    name = "same-person"
    kind = "classification"
    label_key = "same"
    num_outputs = 2
    metric_name = "accuracy"
    higher_is_better = True
    default_dataset = ""

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {"accuracy": accuracy(predictions, targets)}


@dataclass(frozen=True)
class ProbeView:
    """What a probe of a task fits on per-image descriptors: the images with their targets, or for verification
    pairs of images (``|d_a - d_b|``, see :func:`identity_pairs`) with whether they show the same person. Rows
    before ``n_fit`` fit the probe; the others (other images; for verification, other identities) score it."""

    task: Task
    targets: np.ndarray
    n_fit: int
    pairs: tuple[np.ndarray, np.ndarray] | None = None

    def features(self, x: np.ndarray) -> np.ndarray:
        """The probe's rows of per-image descriptors ``x`` (N x filters)."""
        return x if self.pairs is None else np.abs(x[self.pairs[0]] - x[self.pairs[1]])

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Fit features, fit targets, held-out features, held-out targets."""
        rows, n = self.features(x), self.n_fit
        return rows[:n], self.targets[:n], rows[n:], self.targets[n:]


def probe_view(task: Task, targets: np.ndarray, n_fit: int, seed: int) -> ProbeView:
    """The probe problem of ``task`` on samples with ``targets``, the first ``n_fit`` of them fitting. For a
    verification task ``targets`` are identities: pairs are drawn among the first ``n_fit`` samples to fit and
    among the other samples whose identities those lack to score, so the held-out pairs are of unseen people."""
    if task.kind != "verification":
        return ProbeView(task, targets, n_fit)
    rng = np.random.default_rng(seed)
    ids = np.asarray(targets)
    fit_rows = np.arange(n_fit)
    held_rows = np.flatnonzero(~np.isin(ids, ids[:n_fit]))
    parts = [identity_pairs(ids, rows, rng, part) for rows, part in ((fit_rows, "fit"), (held_rows, "held-out"))]
    a, b, same = (np.concatenate(column) for column in zip(*parts, strict=True))
    return ProbeView(SamePerson(), same, len(parts[0][0]), (a, b))


def identity_pairs(identities: np.ndarray, rows: np.ndarray, rng: np.random.Generator,
                   part: str = "probe") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same-identity pairs among ``rows`` (all of them, or :data:`PAIRS_PER_IDENTITY` drawn without replacement
    where an identity has more) and as many pairs of different identities drawn at random with replacement: rows
    ``a``, rows ``b`` and 1 (same) or 0. A ``ValueError`` where ``rows`` hold no identity twice or only one."""
    ids = identities[rows]
    groups = [rows[ids == i] for i in np.unique(ids)]
    pos = [np.empty((2, 0), np.int64)]
    for group in groups:
        pairs = group[np.stack(np.triu_indices(len(group), 1))]
        pos.append(pairs if pairs.shape[1] <= PAIRS_PER_IDENTITY else
                   pairs[:, np.sort(rng.choice(pairs.shape[1], PAIRS_PER_IDENTITY, replace=False))])
    same = np.concatenate(pos, axis=1)
    n = same.shape[1]
    if n == 0 or len(groups) < 2:
        raise ValueError(f"the {part} part of a verification probe ({len(rows)} images of {len(groups)} "
                         "identities) needs an identity with two images and at least two identities")
    different = np.empty((2, 0), np.int64)
    while different.shape[1] < n:
        draw = rng.choice(rows, size=(2, 2 * n))
        different = np.concatenate([different, draw[:, identities[draw[0]] != identities[draw[1]]]], axis=1)[:, :n]
    return (np.concatenate([same[0], different[0]]), np.concatenate([same[1], different[1]]),
            np.concatenate([np.ones(n, np.int64), np.zeros(n, np.int64)]))
