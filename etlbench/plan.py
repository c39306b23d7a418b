"""The plan: an experiment (:class:`ExperimentSpec`, validated by :mod:`etlbench.config`) expands into its
trials, one :class:`~etlbench.trial.TrialSpec` per task x method x compression x seed, each with its setting
resolved (the dataset named and fingerprinted), so that every trial id is final before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from etlbench.backbones import DEFAULT_BACKBONE
from etlbench.measure import MeasureConfig
from etlbench.registry import METHODS
from etlbench.train import TrainConfig
from etlbench.transfer import TRANSFER, TransferSpec
from etlbench.trial import RECOVERY, TrialSpec


@dataclass(frozen=True)
class ExperimentSpec:
    """A validated experiment: what to run, with which budgets."""

    name: str
    tasks: dict[str, str | None]  # task -> dataset (None: the task's own, or synthetic without a data root)
    methods: dict[str, dict[str, Any]]  # method -> its parameters
    compressions: tuple[float | None, ...]  # None: 'auto', for the methods that choose their own operating point
    seeds: tuple[int, ...] = (0,)
    backbone: str = DEFAULT_BACKBONE
    backbone_weights: str | None = None  # a local weights file; relative: under the models root
    input_size: int | None = None
    data_root: str | None = None
    max_train: int | None = None
    budget_of: str = "params"
    threads: int = 1  # torch threads of each trial (parallel trials share the cores)
    gpus: float = 0.0  # GPUs each trial asks Ray for
    transfer: TrainConfig = TRANSFER
    recovery: TrainConfig = RECOVERY
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    also_test: dict[str, tuple[str, ...]] = field(default_factory=dict)  # task -> other datasets to score it on

    def setting(self, task: str, seed: int) -> TransferSpec:
        """The resolved setting of ``task`` and ``seed``: the transfer baseline its trials start from."""
        return TransferSpec(task=task, dataset=self.tasks[task], data_root=self.data_root, backbone=self.backbone,
                            backbone_weights=self.backbone_weights, input_size=self.input_size,
                            max_train=self.max_train, seed=seed, train=self.transfer, threads=self.threads,
                            device="cuda" if self.gpus > 0 else "cpu").resolved()


def plan(spec: ExperimentSpec) -> list[TrialSpec]:
    """Every task x method x compression x seed (``auto`` only for the methods that choose their own point);
    each task's dataset is read once here to fingerprint it."""
    settings = {(task, seed): spec.setting(task, seed) for task in spec.tasks for seed in spec.seeds}
    return [TrialSpec(setting=settings[task, seed], method=method, compression=c, method_params=params,
                      budget_of=spec.budget_of, recovery=spec.recovery, measure=spec.measure)
            for task in spec.tasks for method, params in spec.methods.items()
            for c in spec.compressions if c is not None or METHODS.get(method).chooses_operating_point
            for seed in spec.seeds]
