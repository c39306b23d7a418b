"""Fine-tuning: the transfer baseline (whole source network + new head) and recovery after pruning.

Every method is trained by :func:`fine_tune` with the same :class:`TrainConfig`, so the budget is the same
for all (Blalock et al., MLSys 2020). Model selection uses the validation split only.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn

from etlbench.backbones import ChannelPad, Preprocess, SourceNetwork
from etlbench.checks import AT_LEAST_1, NON_NEGATIVE, POSITIVE, check_fields
from etlbench.data import TaskData
from etlbench.errors import TrainingError
from etlbench.tasks import Task, TaskHead


class TaskModel(nn.Module):
    """A trunk (the source network's blocks up to a cut) followed by a task head."""

    def __init__(self, trunk: nn.Sequential, head: TaskHead):
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def build_task_model(source: SourceNetwork, task: Task, train_targets: np.ndarray, cut: str | None = None,
                     seed: int = 0) -> TaskModel:
    """A copy of the source trunk up to ``cut`` (all of it for ``None``) with a fresh, seeded head; for
    verification, a copy of the source's own embedding (on the whole trunk only)."""
    points = {p.name: p for p in source.cut_points()}
    last = cut or list(points)[-1]
    trunk = copy.deepcopy(source.trunk(cut))
    if task.kind == "verification":
        if last != list(points)[-1]:
            raise ValueError(f"task {task.name} reads the source's embedding, which needs the whole trunk; "
                             f"got a cut at {cut!r}")
        return TaskModel(trunk, copy.deepcopy(source.embedding))
    torch.manual_seed(seed)
    return TaskModel(trunk, task.make_head(points[last].channels, train_targets))


NORM_MODES = ("frozen", "batch", "recalibrate", "reset")
#: Where the shared recipes evaluate val (fractions of the budget): the anytime curve of quality against cost.
ANYTIME = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0)
PRECISIONS = ("fp32", "bf16")
#: What training minimises: the ``task``'s own loss, or (verification) ``identity`` classification of the train
#: identities through a linear classifier on the embedding that is trained along and then discarded.
OBJECTIVES = ("task", "identity")


@dataclass(frozen=True)
class TrainConfig:
    """A fine-tuning recipe and budget: the same for every method of an experiment (Blalock et al., MLSys 2020).

    The budget is ``samples`` seen (epochs follow from the train split's size), else ``epochs`` passes, else
    ``max_steps`` batches when that is set. ``norm`` says how the normalisation layers are handled:
    ``frozen`` keeps their statistics (dlib's are folded: identities) and trains their affine in eval mode;
    ``batch`` first re-expresses them with the train split's statistics (:func:`standardize_norms`, the same
    function) and trains with batch statistics; ``recalibrate`` is EagleEye's adaptive batch norm (Li et al.,
    ECCV 2020): the unpruned start models are re-expressed with their statistics before pruning
    (:func:`etlbench.trial.prune_context`), and the pruned network's statistics are re-estimated with the affine
    kept (:func:`recalibrate_norms`), so that each kept channel leaves its norm distributed as it did before
    pruning; then it trains with batch statistics. ``reset`` re-estimates the statistics without re-expressing
    the start models first, so dlib's folded affine (fitted for identity statistics) then acts on normalised
    inputs: another function, re-fitted by the probe and training (a variant of the recipe search).
    ``objective`` is what training minimises (:data:`OBJECTIVES`; ``identity`` for verification only).
    ``distill`` is the weight of matching the unpruned transfer baseline's outputs (Hinton et al. 2015);
    ``eval_at`` the fractions of the budget where val (and test, for the record) are evaluated, ``()`` after every
    epoch; ``anytime_test`` false evaluates test only for the start and for the final selection (the same selected
    model and test metric, and val at every point, with fewer passes over a large test split; the anytime curve
    then has its two ends). ``precision`` ``bf16`` trains under bfloat16 autocast; evaluation stays fp32.
    """

    # The defaults are the recipe chosen on val (docs/recipe-search/README.md); the budget is the experiment's.
    epochs: int = 3
    samples: int | None = None
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-4  # the head's; AdamW with linear warm-up then cosine decay
    trunk_lr_scale: float = 10.0  # the trunk's rate: 1e-3 (its conv weights are at He scale, balance_convs)
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the steps
    flip: bool = True
    norm: str = "frozen"
    precision: str = "bf16"
    distill: float = 0.0
    temperature: float = 4.0
    objective: str = "task"
    eval_at: tuple[float, ...] = ()
    anytime_test: bool = True
    eval_batch_size: int = 64
    balance_convs: bool = True  # rescale conv weights to He scale first (function-preserving, balance_conv_scales)

    def __post_init__(self) -> None:
        check_fields(self, {
            "epochs": AT_LEAST_1, "samples": AT_LEAST_1, "max_steps": AT_LEAST_1, "batch_size": AT_LEAST_1,
            "eval_batch_size": AT_LEAST_1, "lr": NON_NEGATIVE, "temperature": POSITIVE, "trunk_lr_scale": NON_NEGATIVE,
            "weight_decay": NON_NEGATIVE, "norm": (lambda v: v in NORM_MODES, f"one of {NORM_MODES}"),
            "precision": (lambda v: v in PRECISIONS, f"one of {PRECISIONS}"),
            "objective": (lambda v: v in OBJECTIVES, f"one of {OBJECTIVES}"),
            "warmup": (lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
            "distill": (lambda v: 0 <= v <= 1, "a weight in [0, 1]"),
            "eval_at": (lambda v: 0 < v <= 1, "a fraction in (0, 1]")})

    @staticmethod
    def budget_fields(values: dict[str, Any]) -> dict[str, Any]:
        """``values`` to replace in a recipe, where ``epochs`` given without ``samples`` sets the budget in epochs
        (a recipe's ``samples`` would otherwise take precedence)."""
        return {"samples": None, **values} if "epochs" in values and "samples" not in values else values

    def total_steps(self, n_train: int) -> int:
        """The budget in batches for a train split of ``n_train`` samples."""
        if self.max_steps is not None:
            return self.max_steps
        if self.samples is not None:
            return math.ceil(self.samples / self.batch_size)
        return self.epochs * math.ceil(n_train / self.batch_size)  # an epoch ends with its remainder (_batches)

    def eval_steps(self, n_train: int) -> list[int]:
        """The steps after which val is evaluated (step 0, the starting point, is always evaluated too)."""
        total = self.total_steps(n_train)
        if self.eval_at:
            return sorted({max(1, round(f * total)) for f in self.eval_at} | {total})
        per_epoch = math.ceil(n_train / self.batch_size)
        return sorted({min(total, e * per_epoch) for e in range(1, math.ceil(total / per_epoch) + 1)})


@dataclass
class TrainResult:
    val_metrics: dict[str, float]
    best_step: int
    best_samples: int
    train_seconds: float
    samples_seen: int
    steps: int
    history: list[dict[str, float | None]] = field(default_factory=list)
    test_metrics: dict[str, float] = field(default_factory=dict)  # of the selected model
    test_predictions: np.ndarray | None = None  # of the selected model, for the per-group metrics


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters: inputs are moved there, outputs come back to the CPU."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def use_threads(threads: int) -> None:
    """Compute on ``threads`` threads in this process: torch's intra-op pool and the BLAS pools of numpy and
    scikit-learn. Summation order shapes the last bits and training amplifies them, so a trial must compute
    the same in a Ray worker of ``threads`` CPUs (Ray sets its OMP_NUM_THREADS) and in a process of its own."""
    torch.set_num_threads(threads)
    threadpool_limits(threads, user_api="blas")


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` ("cpu", "cuda", "cuda:1"); a GPU that torch cannot see is an error that says so.
    On a GPU, fp32 stays fp32: TF32 is turned off for this process (torch lets cuDNN's convolutions use it by
    default, so a row saying fp32 would hold TF32 results); a bf16 recipe is unaffected (autocast)."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"device {name!r} was asked for (the spec's gpus), but torch sees no CUDA GPU here")
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    return device


def iterate_batches(images: np.ndarray, batch_size: int, order: np.ndarray | None = None) -> Iterator[np.ndarray]:
    idx = np.arange(len(images)) if order is None else order
    for start in range(0, len(idx), batch_size):
        yield idx[start : start + batch_size]


@torch.inference_mode()
def predict(model: nn.Module, images: np.ndarray, preprocess: Preprocess, size: tuple[int, int],
            batch_size: int = 64) -> np.ndarray:
    """Model outputs for uint8 images, in eval mode (the previous mode is restored)."""
    was_training, device = model.training, model_device(model)
    model.eval()
    outs = [model(preprocess(torch.from_numpy(images[b]), size).to(device)).cpu()
            for b in iterate_batches(images, batch_size)]
    model.train(was_training)
    return torch.cat(outs).numpy()


def evaluate(model: nn.Module, task: Task, images: np.ndarray, targets: np.ndarray, preprocess: Preprocess,
             size: tuple[int, int], batch_size: int = 64) -> dict[str, float]:
    return scored(model, task, images, targets, preprocess, size, batch_size)[0]


def scored(model: nn.Module, task: Task, images: np.ndarray, targets: np.ndarray, preprocess: Preprocess,
           size: tuple[int, int], batch_size: int = 64) -> tuple[dict[str, float], np.ndarray]:
    """The task's metrics of ``model`` on ``images`` and the predictions they were computed from."""
    predictions = task.predictions(predict(model, images, preprocess, size, batch_size))
    return task.evaluate(predictions, targets), predictions


@torch.no_grad()
def balance_conv_scales(model: nn.Module) -> int:
    """Rescale each conv followed (in registration order) by a batch norm to the He-initialisation RMS
    sqrt(2 / fan_in), compensating in the norm's running statistics so that eval mode computes the same function.

    Adam moves every weight by about the learning rate, whatever its scale. dlib's folded batch norms leave
    deep conv weights with an RMS of 5e-4 to 2e-3 (He scale: about 2e-2), so a step meant to be small changes
    them by several percent and a pruned network diverged in its first steps. Returns the convs rescaled.
    """
    mods = [m for m in model.modules() if not isinstance(m, ChannelPad)]
    count = 0
    for conv, norm in itertools.pairwise(mods):
        if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.modules.batchnorm._BatchNorm)
                and conv.out_channels == norm.num_features and norm.running_var is not None):
            continue
        rms = conv.weight.double().pow(2).mean().sqrt().item()
        if rms == 0:
            continue
        c = math.sqrt(2.0 / conv.weight[0].numel()) / rms
        conv.weight.mul_(c)
        if conv.bias is not None:
            conv.bias.mul_(c)
        norm.running_mean.mul_(c)
        norm.running_var.copy_((norm.running_var.double() + norm.eps) * c * c - norm.eps)
        count += 1
    return count


def set_train_mode(model: nn.Module, freeze_norm_stats: bool) -> None:
    """Train mode; with ``freeze_norm_stats`` the batch-norm layers keep their running statistics (eval mode)."""
    model.train()
    if freeze_norm_stats:  # small-batch fine-tuning keeps the source network's normalisation statistics
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.running_var is not None and m.weight is not None]


def _sample(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A seeded subset of ``count`` images (all of them where there are fewer)."""
    if len(images) <= count:
        return images
    return images[np.sort(np.random.default_rng(seed).choice(len(images), count, replace=False))]


@torch.no_grad()
def standardize_norms(model: nn.Module, images: np.ndarray, preprocess: Preprocess, size: tuple[int, int],
                      count: int = 1024, seed: int = 0) -> int:
    """Re-express each batch norm with the per-channel mean and variance of its inputs on ``count`` of
    ``images``, adjusting its affine so that eval mode computes exactly the same function. dlib's norms are
    folded (identity statistics), so training them with batch statistics would change the network ~15x;
    after this it is an ordinary batch-normalised network. Returns the norms re-expressed."""
    norms = _norms(model)
    sums: dict[nn.Module, list[torch.Tensor]] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        x = inputs[0].double().transpose(0, 1).flatten(1)
        acc = sums.setdefault(module, [x.new_zeros(len(x))] * 2 + [0])
        sums[module] = [acc[0] + x.sum(1), acc[1] + x.pow(2).sum(1), acc[2] + x.shape[1]]

    hooks = [m.register_forward_hook(record) for m in norms]
    try:
        predict(model, _sample(images, count, seed), preprocess, size)
    finally:
        for h in hooks:
            h.remove()
    for m in norms:
        total, squares, n = sums[m]
        mean = total / n
        var = (squares / n - mean.pow(2)).clamp_min(0)
        old_std = (m.running_var.double() + m.eps).sqrt()
        gain = m.weight.double() / old_std
        m.bias.copy_(m.bias.double() + gain * (mean - m.running_mean.double()))
        m.weight.copy_(gain * (var + m.eps).sqrt())
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
    return len(norms)


@torch.no_grad()
def recalibrate_norms(model: nn.Module, images: np.ndarray, preprocess: Preprocess, size: tuple[int, int],
                      count: int = 1024, seed: int = 0, batch_size: int = 64) -> int:
    """Adaptive batch norm (Li et al., "EagleEye", ECCV 2020): re-estimate every norm's running statistics from
    ``count`` of ``images`` in train mode (each layer normalised by its own batch statistics), keeping its
    affine. Returns the norms recalibrated."""
    norms = _norms(model)
    was_training, momenta = model.training, [m.momentum for m in norms]
    device = model_device(model)
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
        m.train()
    sample = _sample(images, count, seed)
    for b in iterate_batches(sample, batch_size):
        model(preprocess(torch.from_numpy(sample[b]), size).to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return len(norms)


def prepare(model: nn.Module, images: np.ndarray, preprocess: Preprocess, size: tuple[int, int], cfg: TrainConfig,
            seed: int = 0) -> None:
    """What a recipe does to a network before it is trained: balance the conv scales, then handle the norms."""
    if cfg.balance_convs:
        balance_conv_scales(model)
    if cfg.norm == "batch":
        standardize_norms(model, images, preprocess, size, seed=seed)
    elif cfg.norm in ("recalibrate", "reset"):
        recalibrate_norms(model, images, preprocess, size, seed=seed)


def _optimizer(model: TaskModel, cfg: TrainConfig, classifier: nn.Module | None = None) -> torch.optim.Optimizer:
    """AdamW over the trunk (at ``lr * trunk_lr_scale``) and the head and any training-only classifier (at ``lr``)."""
    trunk = [p for p in model.trunk.parameters() if p.requires_grad]
    head = [p for p in model.head.parameters() if p.requires_grad]
    head += list(classifier.parameters()) if classifier is not None else []
    return torch.optim.AdamW([{"params": trunk, "lr": cfg.lr * cfg.trunk_lr_scale}, {"params": head, "lr": cfg.lr}],
                             weight_decay=cfg.weight_decay)


def _better(task: Task, a: float, b: float | None) -> bool:
    return b is None or (a > b if task.higher_is_better else a < b)


def _batches(task: Task, targets: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Batches of a new permutation every epoch (in the task's :meth:`~Task.batch_order`), without end (each epoch
    ends with its remainder, unless that is one image: batch norm cannot normalise one image where the network's
    map is 1x1, and a pair loss finds no pair in it; e.g. LFW's 3,105 training images of ``verification_reverse``
    in batches of 32)."""
    while True:
        order = task.batch_order(rng.permutation(len(targets)), targets)
        yield from (b for b in iterate_batches(targets, batch_size, order) if len(b) > 1 or len(targets) == 1)


def _schedule(total_steps: int, warmup: float) -> Callable[[int], float]:
    """The learning-rate factor at a step: linear warm-up over ``warmup`` of the steps, then cosine decay."""
    ramp = round(warmup * total_steps)

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        return 0.5 * (1 + math.cos(math.pi * min(step - ramp, total_steps - ramp) / max(1, total_steps - ramp)))

    return factor


def identity_classifier(model: TaskModel, data: TaskData, preprocess: Preprocess, size: tuple[int, int],
                        cfg: TrainConfig) -> nn.Module | None:
    """For ``objective: identity``, a linear classifier from the embedding to the train identities (drawn from the
    global generator, which the caller seeds), trained along and discarded; else ``None``."""
    if cfg.objective == "task":
        return None
    if data.task.kind != "verification":
        raise TrainingError(f"objective {cfg.objective!r} trains verification embeddings; task {data.task.name} "
                            f"is {data.task.kind}")
    width = predict(model, data.images["train"][:1], preprocess, size).shape[1]
    return nn.Linear(width, int(data.targets["train"].max()) + 1).to(model_device(model))


def fine_tune(model: TaskModel, data: TaskData, preprocess: Preprocess, size: tuple[int, int], cfg: TrainConfig,
              seed: int = 0, teacher: np.ndarray | None = None) -> TrainResult:
    """Train ``model`` in place on the train split for ``cfg``'s budget and keep the weights of the best
    validation evaluation (the starting point competes too). ``teacher``: outputs of the unpruned model for
    every train image, unflipped and flipped (N x 2 x outputs), for distillation. Test is evaluated whenever val
    selects a new model, so that the history holds the test metric of the selected model at every evaluation
    (an anytime curve: quality against recovery cost; selection never reads test); with ``cfg.anytime_test``
    false, only for the start and, at the end, for the final selection."""
    task = data.task
    x_train, y_train = data.images["train"], data.targets["train"]
    total_steps = cfg.total_steps(len(x_train))
    checkpoints = set(cfg.eval_steps(len(x_train)))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    classifier = identity_classifier(model, data, preprocess, size, cfg)  # seeded: drawn after the seed
    opt = _optimizer(model, cfg, classifier)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(total_steps, cfg.warmup))
    device = model_device(model)
    model.to(memory_format=torch.channels_last)
    best: dict[str, Any] = {"metric": None}
    history: list[dict[str, float | None]] = []
    step = seen = 0
    losses: list[float] = []
    spent = 0.0  # training and validation seconds (test evaluations are bookkeeping and not counted)
    clock = time.perf_counter()

    def checkpoint() -> None:  # model selection on the validation split only
        nonlocal spent, clock
        val = evaluate(model, task, data.images["val"], data.targets["val"], preprocess, size, cfg.eval_batch_size)
        spent += time.perf_counter() - clock
        if _better(task, val[task.metric_name], best["metric"]):
            best.update(metric=val[task.metric_name], val=val, test=None, predictions=None, step=step,
                        samples=seen, state=copy.deepcopy(model.state_dict()))
            if cfg.anytime_test or step == 0:
                best["test"], best["predictions"] = test_of(model)
        history.append({"step": step, "samples": seen, "seconds": spent,
                        "train_loss": float(np.mean(losses)) if losses else None,
                        **{f"val_{k}": v for k, v in val.items()},
                        **{f"best_test_{k}": v for k, v in (best["test"] or {}).items()}})
        losses.clear()
        clock = time.perf_counter()

    def test_of(network: nn.Module) -> tuple[dict[str, float], np.ndarray]:
        return scored(network, task, data.images["test"], data.targets["test"], preprocess, size, cfg.eval_batch_size)

    checkpoint()
    set_train_mode(model, freeze_norm_stats=cfg.norm == "frozen")
    for b in _batches(task, y_train, cfg.batch_size, rng):
        if step >= total_steps:
            break
        x, y = torch.from_numpy(x_train[b]), torch.from_numpy(y_train[b])
        flip = torch.from_numpy(rng.random(len(b)) < 0.5) if cfg.flip else torch.zeros(len(b), dtype=torch.bool)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(2), x)  # N x H x W x C: flip the width axis
        if y.dtype.is_floating_point:
            y = torch.where(flip.view(-1, 1), task.flip_targets(y), y)
        inputs = preprocess(x, size).to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            out = model(inputs).float()
        loss = task.loss(out, y.to(device)) if classifier is None else F.cross_entropy(classifier(out), y.to(device))
        if teacher is not None and cfg.distill > 0:
            target = torch.from_numpy(teacher[b, flip.long().numpy()]).to(device)
            loss = (1 - cfg.distill) * loss + cfg.distill * task.distill_loss(out, target, cfg.temperature)
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {step} (lr {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        step += 1
        seen += len(b)
        if step in checkpoints:
            checkpoint()
            set_train_mode(model, freeze_norm_stats=cfg.norm == "frozen")
    model.load_state_dict(best["state"])
    if best["test"] is None:  # anytime_test off: the final selection's test, at the end of the curve
        best["test"], best["predictions"] = test_of(model)
        history[-1].update({f"best_test_{k}": v for k, v in best["test"].items()})
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return TrainResult(best["val"], best["step"], best["samples"], spent, seen, step, history, best["test"],
                       best["predictions"])
