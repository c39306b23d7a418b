"""The pruning-method API: a method says where it starts and how it scores the output channels of each layer.

The rest is shared by every method, so the comparison is fair (Blalock et al., MLSys 2020): the same
selection policy (:func:`etlbench.surgery.prune_to_budget`), the same budget tolerance, the same recovery.
As in Torch-Pruning, the scoring rule and the algorithm that uses it stay apart: :meth:`PruningMethod.importance`
returns the scores for one model and context, :meth:`PruningMethod.prune` runs the shared selection, and a method
keeps no state between calls. Writing a criterion takes a few lines::

    from etlbench.methods import PruningMethod, register_method

    @register_method("l2")
    class L2Norm(PruningMethod):
        '''L2 norm of each filter (a variant of Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017).'''

        def channel_scores(self, name, layer):
            return layer.weight.detach().flatten(1).norm(dim=1)
"""

from __future__ import annotations

import contextlib
import inspect
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from etlbench.backbones import SourceNetwork
from etlbench.checks import describe, fits
from etlbench.data import TaskData
from etlbench.errors import ConfigError
from etlbench.registry import METHODS
from etlbench.surgery import Budget, PruneOutcome, Scorer, prune_to_budget
from etlbench.train import TaskModel, build_task_model, iterate_batches

Policy = Literal["global", "uniform"]


@dataclass
class PruneContext:
    """What a method may read: the task data (train/val only are used), the source network, the input size,
    the seed, the unpruned transfer baseline's size, a provider of the transfer-learned model, and where a
    method may cache what its trials share (:meth:`cache_key` names it)."""

    data: TaskData
    source: SourceNetwork
    size: tuple[int, int]
    seed: int
    baseline_params: int
    baseline_macs: int
    transfer_model: Callable[[], TaskModel]
    setting_key: str  # the identity of the trial's setting (TransferSpec: task, data, backbone, input size, seed...)
    cache_dir: str | None = None

    def baseline_size(self, of: str) -> int:
        """The unpruned transfer baseline's parameters or MACs: what a budget's compression divides."""
        return self.baseline_params if of == "params" else self.baseline_macs

    def cache_key(self, kind: str, **params: Any) -> str:
        """The identity of a method's cached stage (``kind``) with ``params`` in this setting, under this code."""
        from etlbench.identity import identity

        return identity(kind, {"setting": self.setting_key, **params})

    def training_batches(self, images: int, batch_size: int = 32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``images`` training images of a permutation seeded by the trial's seed, preprocessed, with their
        targets, in batches: what every data-reading criterion scores with (the same images for all of a trial's
        methods that read as many)."""
        x, y = self.data.images["train"], self.data.targets["train"]
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed)).numpy()
        order = self.data.task.batch_order(order, y)[:images]
        for b in iterate_batches(x, batch_size, order):
            yield self.source.preprocess(torch.from_numpy(x[b]), self.size), torch.from_numpy(y[b])


@contextlib.contextmanager
def hooked(handles: Iterable[RemovableHandle]) -> Iterator[None]:
    """The hooks of ``handles`` in place for the ``with`` block only (removed even where it raises)."""
    handles = list(handles)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def gradient_pass(model: nn.Module) -> Iterator[None]:
    """Eval mode (norm statistics and dropout fixed: the scores are a function of the seed) with gradients, for a
    criterion's backward passes; after it the model holds no gradients (its pruned copies and their recovery start
    clean)."""
    model.zero_grad(set_to_none=True)
    model.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        model.zero_grad(set_to_none=True)


class PruningMethod:
    """Base class of pruning methods: implement :meth:`channel_scores` (higher = keep), or :meth:`importance`
    where the scores need the model and the data (gradients, probes). Registration names the class."""

    name: ClassVar[str] = ""  # its registered name: set by registration; the built-ins set it themselves too
    starts_from: ClassVar[Literal["transfer", "source"]] = "transfer"
    #: Whether the method can choose its own operating point (``compression: auto``, no budget).
    chooses_operating_point: ClassVar[bool] = False
    #: The kinds of task it can score channels for (a spec pairing it with another is refused).
    task_kinds: ClassVar[tuple[str, ...]] = ("regression", "classification", "verification")

    def __init__(self, policy: Policy = "global", max_layer_ratio: float = 0.95):
        if policy not in ("global", "uniform"):
            raise self.error("policy", f"must be 'global' or 'uniform', got {policy!r}")
        if not 0 < max_layer_ratio < 1:
            raise self.error("max_layer_ratio", f"must be in (0, 1), got {max_layer_ratio}")
        self.policy = policy
        self.max_layer_ratio = max_layer_ratio

    def at_least_one(self, key: str, value: int) -> int:
        """``value`` of the count parameter ``key`` (batches, samples), which must be at least 1."""
        if value < 1:
            raise self.error(key, f"must be at least 1, got {value}")
        return value

    def error(self, key: str, message: str) -> ConfigError:
        """A :class:`ConfigError` that names this method and the parameter ``key``."""
        return ConfigError(f"method {self.name!r}: parameter {key} {message}", key=key)

    def start_model(self, ctx: PruneContext) -> TaskModel:
        """The model pruning starts from: the transfer baseline (default) or the source network with a head."""
        if self.starts_from == "transfer":
            return ctx.transfer_model()
        return build_task_model(ctx.source, ctx.data.task, ctx.data.targets["train"], seed=ctx.seed)

    def shared_stage(self, ctx: PruneContext) -> None:  # optional hook
        """Work shared by all trials of this method on one setting (e.g. ETL's probes): the runner calls it
        once before them; it should cache its result under ``ctx.cache_dir`` for the trials to read."""

    def channel_scores(self, name: str, layer: nn.Module) -> torch.Tensor | None:
        """Importance of each output channel of ``layer`` (module ``name`` of the model); ``None``: no opinion."""
        raise NotImplementedError(f"method {self.name!r} implements neither channel_scores nor importance")

    def importance(self, model: TaskModel, ctx: PruneContext) -> Scorer:
        """The scoring rule for ``model`` in ``ctx``: a function (layer name, layer) -> a score per output
        channel, or a Torch-Pruning ``Importance`` of whole channel groups. Default: :meth:`channel_scores`, which
        needs neither."""
        return self.channel_scores

    def prune(self, ctx: PruneContext, budget: Budget | None) -> PruneOutcome:
        """Start, score and prune to ``budget`` with the shared selection (``None``: the method's own point)."""
        if budget is None:
            raise ConfigError(f"method {self.name!r} cannot choose its own operating point: give a compression")
        model = self.start_model(ctx)
        return self.select(model, self.importance(model, ctx), budget, ctx)

    def select(self, model: TaskModel, scorer: Scorer, budget: Budget, ctx: PruneContext) -> PruneOutcome:
        """The shared selection: ``model`` pruned by ``scorer`` to ``budget`` with this method's policy."""
        return prune_to_budget(model, scorer, budget, ctx.baseline_size(budget.of), ctx.size, policy=self.policy,
                               max_layer_ratio=self.max_layer_ratio)


def method_parameters(cls: type[PruningMethod]) -> dict[str, inspect.Parameter]:
    """The keyword parameters a method takes, with their type hints as annotations: those of the ``__init__`` it
    runs, and of its bases' only where that ``__init__`` passes ``**kwargs`` on (a subclass may take fewer)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and issubclass(klass, PruningMethod):
            hints = typing.get_type_hints(klass.__init__)
            signature = list(inspect.signature(klass.__init__).parameters.values())[1:]
            for p in signature:
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in params:
                    params[p.name] = p.replace(annotation=hints.get(p.name, p.annotation))
            if not any(p.kind == p.VAR_KEYWORD for p in signature):
                break
    return params


def full_parameters(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with every parameter of the method at its default where not given, and integers given for a
    float parameter as floats: the form a trial's identity hashes (``etl`` and ``etl {epsilon: 0.01}`` are one
    trial). Parameters the method does not take are kept, for :func:`create_method` to reject."""
    known = method_parameters(METHODS.get(name))
    out = {k: p.default for k, p in known.items() if p.default is not inspect.Parameter.empty}
    for key, value in params.items():
        is_int = isinstance(value, int) and not isinstance(value, bool)
        out[key] = float(value) if key in known and known[key].annotation is float and is_int else value
    return out


def create_method(name: str, **params: Any) -> PruningMethod:
    """A configured method; a parameter it does not take, or a value of the wrong type, is a
    :class:`ConfigError` that names the method and the key (``err.key``)."""
    cls = METHODS.get(name)
    known = method_parameters(cls)
    for key, value in params.items():
        if key not in known:
            raise ConfigError(f"method {name!r} does not take parameter {key!r}; it takes: {sorted(known) or 'none'}",
                              key=key)
        hint = known[key].annotation
        if hint is not inspect.Parameter.empty and not fits(value, hint):
            raise ConfigError(f"method {name!r}: parameter {key} must be {describe(hint)}, got {value!r}", key=key)
    return cls(**params)
