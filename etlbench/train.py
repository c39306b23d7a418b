"""Fine-tuning: the transfer baseline (whole source network + new head) and recovery after pruning.

Every method is trained by :func:`fine_tune` with the same :class:`TrainConfig`, so the budget is the same
for all (Blalock et al., MLSys 2020). Model selection uses the validation split only.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from etlbench.backbones import ChannelPad, Preprocess, SourceNetwork
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
    """A copy of the source trunk up to ``cut`` (all of it for ``None``) with a fresh, seeded head."""
    points = {p.name: p for p in source.cut_points()}
    last = cut or list(points)[-1]
    trunk = copy.deepcopy(source.trunk(cut))
    torch.manual_seed(seed)
    return TaskModel(trunk, task.make_head(points[last].channels, train_targets))


@dataclass(frozen=True)
class TrainConfig:
    """The fine-tuning budget: the same for every method of an experiment."""

    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-4  # the head's; AdamW, cosine schedule (chosen on UTKFace gender's val split: 1e-3 overshot)
    trunk_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    flip: bool = True
    freeze_norm_stats: bool = True
    eval_batch_size: int = 64
    # Recovery after pruning (see etlbench.trial.recover); off for the transfer baseline, which starts from the
    # probe of the whole source network by its own recipe.
    probe_head: bool = False  # start the head at the linear probe of the (pruned) trunk's features
    balance_convs: bool = False  # rescale conv weights to He scale first (function-preserving, balance_conv_scales)


@dataclass
class TrainResult:
    val_metrics: dict[str, float]
    best_epoch: int
    train_seconds: float
    samples_seen: int
    steps: int
    history: list[dict[str, float | None]] = field(default_factory=list)


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
    """The torch device ``name`` ("cpu", "cuda", "cuda:1"); a GPU that torch cannot see is an error that says so."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} was asked for (the spec's gpus), but torch sees no CUDA GPU here")
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
    outputs = predict(model, images, preprocess, size, batch_size)
    return task.evaluate(task.predictions(outputs), targets)


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


def _optimizer(model: TaskModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    trunk = [p for p in model.trunk.parameters() if p.requires_grad]
    head = [p for p in model.head.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": trunk, "lr": cfg.lr * cfg.trunk_lr_scale}, {"params": head, "lr": cfg.lr}],
                             weight_decay=cfg.weight_decay)


def _better(task: Task, a: float, b: float | None) -> bool:
    return b is None or (a > b if task.higher_is_better else a < b)


def fine_tune(model: TaskModel, data: TaskData, preprocess: Preprocess, size: tuple[int, int], cfg: TrainConfig,
              seed: int = 0) -> TrainResult:
    """Train ``model`` in place on the train split; keep the weights of the best validation evaluation."""
    task = data.task
    x_train, y_train = data.images["train"], data.targets["train"]
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs if cfg.max_steps is None else cfg.max_steps
    epochs = math.ceil(total_steps / steps_per_epoch)
    opt = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps)
                                                                                 / total_steps)))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    device = model_device(model)
    best, best_state, best_epoch, best_val, history = None, None, 0, {}, []
    step = seen = 0
    start = time.perf_counter()

    def select(epoch: int, train_loss: float | None) -> None:  # model selection on the validation split only
        nonlocal best, best_state, best_epoch, best_val
        val = evaluate(model, task, data.images["val"], data.targets["val"], preprocess, size, cfg.eval_batch_size)
        history.append({"epoch": epoch, "step": step, "train_loss": train_loss,
                        **{f"val_{k}": v for k, v in val.items()}})
        if _better(task, val[task.metric_name], best):
            best, best_epoch, best_val = val[task.metric_name], epoch, val
            best_state = copy.deepcopy(model.state_dict())

    select(0, None)  # the starting point competes too (e.g. the linear probe's head); it has no training loss
    for epoch in range(1, epochs + 1):
        set_train_mode(model, cfg.freeze_norm_stats)
        losses = []
        for b in iterate_batches(x_train, cfg.batch_size, rng.permutation(len(x_train))):
            if step >= total_steps:
                break
            x = torch.from_numpy(x_train[b])
            y = torch.from_numpy(y_train[b])
            if cfg.flip:
                flip = torch.from_numpy(rng.random(len(b)) < 0.5)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(2), x)  # N x H x W x C: flip the width axis
                if y.dtype.is_floating_point:
                    y = torch.where(flip.view(-1, 1), task.flip_targets(y), y)
            loss = task.loss(model(preprocess(x, size).to(device)), y.to(device))
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at step {step} (epoch {epoch}, lr {cfg.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            seen += len(b)
        select(epoch, float(np.mean(losses)) if losses else None)
    train_seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(best_val, best_epoch, train_seconds, seen, step, history)
