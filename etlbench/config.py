"""Experiment specs: a YAML file or a named preset, validated as a whole before anything runs.

Every key is checked (after Distiller's config checking): an unknown section or key, a method parameter the
plugin does not take, an unknown task, method, backbone or dataset, or a compression below 1 is an error
that names the file, the section and the key. A valid spec expands into the plan: one :class:`TrialSpec`
per task x method x compression x seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from etlbench.backbones import BACKBONES, DEFAULT_BACKBONE, create_backbone, weights_path
from etlbench.data import dataset_for_task
from etlbench.measure import MeasureConfig
from etlbench.methods import METHODS, method_parameters
from etlbench.paths import data_root as resolve_data_root
from etlbench.registry import DATASETS, TASKS, UnknownNameError
from etlbench.tasks import create_task
from etlbench.train import TrainConfig
from etlbench.trial import RECOVERY, TrialSpec


class SpecError(ValueError):
    """An experiment spec that cannot run; the message names the source, the section and the key."""


@dataclass(frozen=True)
class ExperimentSpec:
    """A validated experiment: what to run, with which budgets."""

    name: str
    tasks: dict[str, str | None]  # task -> dataset (None: the task's own, or synthetic without a data root)
    methods: dict[str, dict[str, Any]]  # method -> its parameters
    compressions: tuple[float | None, ...]
    seeds: tuple[int, ...] = (0,)
    backbone: str = DEFAULT_BACKBONE
    backbone_weights: str | None = None  # a local weights file; relative: under the models root
    input_size: int | None = None
    data_root: str | None = None
    max_train: int | None = None
    budget_of: str = "params"
    threads: int = 1  # torch threads of each trial (parallel trials share the cores)
    gpus: float = 0.0  # GPUs each trial asks Ray for
    transfer: TrainConfig = field(default_factory=TrainConfig)
    recovery: TrainConfig = RECOVERY
    measure: MeasureConfig = field(default_factory=MeasureConfig)

    def trials(self) -> list[TrialSpec]:
        """The plan: every task x method x compression x seed (``auto`` compressions only for ETL)."""
        return [TrialSpec(task=task, method=method, compression=c, seed=seed, backbone=self.backbone,
                          backbone_weights=self.backbone_weights,
                          dataset=dataset, data_root=self.data_root, input_size=self.input_size,
                          max_train=self.max_train, transfer=self.transfer, recovery=self.recovery,
                          method_params=params, budget_of=self.budget_of, threads=self.threads,
                          device="cuda" if self.gpus > 0 else "cpu", measure=self.measure)
                for task, dataset in self.tasks.items() for method, params in self.methods.items()
                for c in self.compressions if c is not None or method == "etl" for seed in self.seeds]


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("etlbench.presets").iterdir()
                  if p.name.endswith(".yaml"))


def load_spec(preset: str | None = None, path: str | Path | None = None, **overrides: Any) -> ExperimentSpec:
    """Read a preset by name or a YAML file, apply ``overrides`` (e.g. ``data_root``), validate everything."""
    if (preset is None) == (path is None):
        raise SpecError("give exactly one of a preset name or a spec file")
    if preset is not None:
        if preset not in preset_names():
            raise SpecError(f"unknown preset {preset!r}; presets: {', '.join(preset_names())}")
        source, text = f"preset {preset}", resources.files("etlbench.presets").joinpath(f"{preset}.yaml").read_text()
    else:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise SpecError(f"{source}: cannot read the spec file ({err})") from err
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise SpecError(f"{source}: not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: the spec must be a mapping of sections, got {type(raw).__name__}")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return parse_spec(raw, source)


def _fail(source: str, where: str, message: str) -> SpecError:
    return SpecError(f"{source}: {where}: {message}")


def _section(raw: Any, source: str, section: str, default: Any) -> Any:
    """A dataclass section (``transfer``, ``recovery``, ``measure``): known keys only, values checked."""
    if raw is None:
        return default
    keys = sorted(f.name for f in dataclasses.fields(default))
    if not isinstance(raw, dict):
        raise _fail(source, section, f"expected a mapping of {keys}")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise _fail(source, f"{section}.{unknown[0]}", f"unknown key; {section} takes {keys}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    try:
        return dataclasses.replace(default, **values)
    except (TypeError, ValueError) as err:
        raise _fail(source, section, str(err)) from err


def _check_dataset(task: str, dataset: str | None, root: str | None, source: str) -> None:
    """The task's dataset must exist now, not after hours of other trials."""
    name = dataset or dataset_for_task(create_task(task), root)
    where = f"tasks.{task}.dataset"
    if name.endswith(".npz"):
        if not Path(name).is_file():
            raise _fail(source, where, f"dataset file {name} does not exist")
        return
    spec = DATASETS.get(name)
    if spec.relative_path is None:
        return
    resolved = resolve_data_root(root)
    if resolved is None:
        raise _fail(source, where, f"dataset {name!r} needs a data root: set data_root, pass --data-root or set "
                                   f"ETLBENCH_DATA (expected <root>/{spec.relative_path})")
    if not spec.path(resolved).is_file():
        raise _fail(source, where, f"dataset {name!r} not found: expected the file {spec.path(resolved)}")


def _check_backbone(name: str, weights: str | None, source: str) -> None:
    """Build the backbone once: its weights must be found and load now, not in every trial of the sweep."""
    try:
        create_backbone(name, weights)
    except Exception as err:  # a missing file, or one that is not the backbone's format: report, do not crash
        where = f" from {weights_path(weights)}" if weights is not None else ""
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _fail(source, "backbone_weights" if weights is not None else "backbone",
                    f"{name!r} cannot be built{where}: {first_line}") from err


def _known(registry: Any, name: str, source: str, where: str) -> None:
    try:
        registry.entry(name)
    except UnknownNameError as err:
        raise _fail(source, where, str(err)) from err


def parse_spec(raw: dict[str, Any], source: str = "spec") -> ExperimentSpec:
    """Validate a spec mapping (see the presets for examples) into an :class:`ExperimentSpec`."""
    allowed = {f.name for f in dataclasses.fields(ExperimentSpec)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(source, unknown[0], f"unknown section; a spec has {sorted(allowed)}")
    for key in ("tasks", "methods", "compressions"):
        if not raw.get(key):
            raise _fail(source, key, "missing or empty")
    backbone = raw.get("backbone", DEFAULT_BACKBONE)
    _known(BACKBONES, backbone, source, "backbone")
    weights = raw.get("backbone_weights")
    if weights is not None and not weights_path(weights).is_file():
        raise _fail(source, "backbone_weights", f"weights file {weights_path(weights)} does not exist (a relative "
                                                f"path is looked up under the models root, $ETLBENCH_MODELS)")
    _check_backbone(backbone, weights, source)

    tasks_raw = raw["tasks"]
    tasks_raw = {t: None for t in tasks_raw} if isinstance(tasks_raw, list) else tasks_raw
    tasks: dict[str, str | None] = {}
    for task, options in tasks_raw.items():
        _known(TASKS, task, source, f"tasks.{task}")
        options = options or {}
        if not isinstance(options, dict) or set(options) - {"dataset"}:
            raise _fail(source, f"tasks.{task}", "takes only 'dataset'")
        dataset = options.get("dataset")
        if dataset is not None and not str(dataset).endswith(".npz"):
            _known(DATASETS, dataset, source, f"tasks.{task}.dataset")
        _check_dataset(task, dataset, raw.get("data_root"), source)
        tasks[task] = dataset

    methods_raw = raw["methods"]
    methods_raw = {m: {} for m in methods_raw} if isinstance(methods_raw, list) else methods_raw
    methods: dict[str, dict[str, Any]] = {}
    for method, params in methods_raw.items():
        _known(METHODS, method, source, f"methods.{method}")
        params = params or {}
        takes = method_parameters(METHODS.get(method))
        for key in params:
            if key not in takes:
                raise _fail(source, f"methods.{method}.{key}", f"the method does not take this parameter; it takes "
                                                               f"{sorted(takes) or 'none'}")
        methods[method] = dict(params)

    compressions: list[float | None] = []
    for i, c in enumerate(raw["compressions"]):
        if c == "auto":
            compressions.append(None)
        elif not isinstance(c, int | float) or isinstance(c, bool) or c < 1:
            raise _fail(source, f"compressions[{i}]", f"{c!r} is not a ratio of at least 1 (or 'auto')")
        else:
            compressions.append(float(c))
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise _fail(source, "seeds", f"expected a list of integers, got {seeds!r}")
    if raw.get("budget_of", "params") not in ("params", "macs"):
        raise _fail(source, "budget_of", f"expected 'params' or 'macs', got {raw['budget_of']!r}")
    for key, minimum in (("threads", 1), ("gpus", 0), ("max_train", 1), ("input_size", 16)):
        value = raw.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value < minimum):
            raise _fail(source, key, f"expected a number of at least {minimum}, got {value!r}")
    return ExperimentSpec(
        name=str(raw.get("name", Path(source).stem)), tasks=tasks, methods=methods, compressions=tuple(compressions),
        seeds=tuple(seeds), backbone=backbone, backbone_weights=weights, input_size=raw.get("input_size"),
        data_root=raw.get("data_root"),
        max_train=raw.get("max_train"), budget_of=raw.get("budget_of", "params"), threads=int(raw.get("threads", 1)),
        gpus=float(raw.get("gpus", 0)), transfer=_section(raw.get("transfer"), source, "transfer", TrainConfig()),
        recovery=_section(raw.get("recovery"), source, "recovery", RECOVERY),
        measure=_section(raw.get("measure"), source, "measure", MeasureConfig()))
