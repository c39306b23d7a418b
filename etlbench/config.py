"""Experiment specs: a YAML file or a named preset, validated as a whole before anything runs.

Every key is checked (after Distiller's config checking): an unknown section or key, a method parameter the
plugin does not take or of the wrong type, an unknown task, method, backbone or dataset, a compression below 1,
or ``auto`` where no method chooses its own operating point is an error that names the file, the section and
the key. A valid spec is an :class:`~etlbench.plan.ExperimentSpec`; :func:`etlbench.plan.plan` expands it.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from etlbench.backbones import BACKBONES, DEFAULT_BACKBONE, check_backbone, weights_path
from etlbench.checks import AT_LEAST_1, INPUT_SIZE, NON_NEGATIVE, Rule, check_compression, check_value
from etlbench.data import dataset_for_task
from etlbench.errors import ConfigError, DatasetError, LabelError, SpecError
from etlbench.measure import MeasureConfig
from etlbench.methods import METHODS, create_method
from etlbench.paths import data_root as resolve_data_root
from etlbench.plan import ExperimentSpec
from etlbench.registry import DATASETS, TASKS, UnknownNameError
from etlbench.tasks import create_task
from etlbench.train import TrainConfig
from etlbench.transfer import TRANSFER
from etlbench.trial import RECOVERY

__all__ = ["ExperimentSpec", "SpecError", "load_spec", "parse_spec", "preset_names"]


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
        raise SpecError(f"{source}: not valid YAML ({' '.join(str(err).split())})") from err
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: the spec must be a mapping of sections, got {type(raw).__name__}")
    raw.update({k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in overrides.items() if v is not None})
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
    if isinstance(default, TrainConfig):
        values = default.budget_fields(values)
    try:
        return dataclasses.replace(default, **values)
    except ConfigError as err:
        raise _fail(source, f"{section}.{err.key}", str(err).removeprefix(f"{err.key}: ")) from err


def _check_dataset(task: str, dataset: str | None, root: str | None, source: str, where: str) -> None:
    """The task's dataset must exist now, not after hours of other trials."""
    name = dataset or dataset_for_task(create_task(task), root)
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


def _known(registry: Any, name: Any, source: str, where: str) -> None:
    if not isinstance(name, str):
        raise _fail(source, where, f"expected a {registry.kind.removesuffix('s')} name, got {name!r}")
    try:
        registry.entry(name)
    except UnknownNameError as err:
        raise _fail(source, where, str(err)) from err


def _named(raw: Any, empty: Any, source: str, section: str) -> Any:
    """A list of names as a mapping of each to ``empty`` options (a mapping is returned as it is)."""
    if not isinstance(raw, list):
        return raw
    for i, name in enumerate(raw):
        if not isinstance(name, str):
            raise _fail(source, f"{section}[{i}]", f"expected a name, got {name!r}")
    return {name: empty for name in raw}


def _tasks(raw: Any, root: str | None, source: str) -> tuple[dict[str, str | None], dict[str, tuple[str, ...]]]:
    """Each task's dataset, and the extra datasets its models are also scored on (``also_test``)."""
    raw = _named(raw, None, source, "tasks")
    if not isinstance(raw, dict):
        raise _fail(source, "tasks", f"expected a list or a mapping of tasks, got {raw!r}")
    tasks: dict[str, str | None] = {}
    also: dict[str, tuple[str, ...]] = {}
    for task, options in raw.items():
        _known(TASKS, task, source, f"tasks.{task}")
        options = options or {}
        if not isinstance(options, dict) or set(options) - {"dataset", "also_test"}:
            raise _fail(source, f"tasks.{task}", "takes only 'dataset' and 'also_test'")
        dataset = options.get("dataset")
        if dataset is not None and not str(dataset).endswith(".npz"):
            _known(DATASETS, dataset, source, f"tasks.{task}.dataset")
        _check_dataset(task, dataset, root, source, f"tasks.{task}.dataset")
        tasks[task] = dataset
        extra = options.get("also_test") or []
        if not isinstance(extra, list) or not all(isinstance(d, str) for d in extra):
            raise _fail(source, f"tasks.{task}.also_test", f"expected a list of datasets (.npz files or names), "
                                                          f"got {extra!r}")
        for i, name in enumerate(extra):
            _check_scorable(task, name, root, source, f"tasks.{task}.also_test[{i}]")
        if extra:
            also[task] = tuple(extra)
    return tasks, also


def _check_scorable(task: str, dataset: str, root: str | None, source: str, where: str) -> None:
    """An extra test dataset exists and has labels the task can be scored on, before anything runs."""
    from etlbench.data import load_dataset
    from etlbench.evaluate import evaluation_set

    if not dataset.endswith(".npz"):
        _known(DATASETS, dataset, source, where)
    _check_dataset(task, dataset, root, source, where)
    try:
        evaluation_set(create_task(task), load_dataset(dataset, root))
    except (LabelError, DatasetError) as err:
        raise _fail(source, where, str(err)) from err


def _methods(raw: Any, source: str) -> dict[str, dict[str, Any]]:
    """Each method is built from its parameters now: a parameter it does not take or of the wrong type or range is
    an error naming ``methods.NAME.KEY``."""
    raw = _named(raw, {}, source, "methods")
    if not isinstance(raw, dict):
        raise _fail(source, "methods", f"expected a list or a mapping of methods, got {raw!r}")
    methods: dict[str, dict[str, Any]] = {}
    for method, params in raw.items():
        _known(METHODS, method, source, f"methods.{method}")
        params = params or {}
        if not isinstance(params, dict):
            raise _fail(source, f"methods.{method}", f"expected a mapping of parameters, got {params!r}")
        try:
            create_method(method, **params)
        except ConfigError as err:
            raise _fail(source, f"methods.{method}" + (f".{err.key}" if err.key else ""), str(err)) from err
        methods[method] = dict(params)
    return methods


def _compressions(raw: Any, methods: dict[str, dict[str, Any]], source: str) -> tuple[float | None, ...]:
    if not isinstance(raw, list):
        raise _fail(source, "compressions", f"expected a list of ratios (e.g. [2, 4, auto]), got {raw!r}")
    out: list[float | None] = []
    any_chooser = any(METHODS.get(m).chooses_operating_point for m in methods)
    for i, c in enumerate(raw):
        try:
            out.append(check_compression(c))
        except ConfigError as err:
            raise _fail(source, f"compressions[{i}]", str(err)) from err
        if c == "auto" and not any_chooser:
            raise _fail(source, f"compressions[{i}]", f"'auto' needs a method that chooses its own operating "
                                                      f"point; none of {sorted(methods)} does")
    return tuple(out)


#: The ranges of the spec's top-level values (their types come from :class:`ExperimentSpec`'s hints).
_SCALAR_RULES: dict[str, Rule] = {"seeds": NON_NEGATIVE, "threads": AT_LEAST_1, "gpus": NON_NEGATIVE,
                                  "max_train": AT_LEAST_1, "input_size": INPUT_SIZE,
                                  "budget_of": (lambda v: v in ("params", "macs"), "'params' or 'macs'")}


def _check_scalars(raw: dict[str, Any], source: str) -> None:
    hints = typing.get_type_hints(ExperimentSpec)
    for key in sorted(set(raw) - {"tasks", "methods", "compressions", "transfer", "recovery", "measure"}):
        try:
            check_value(key, raw[key], hints[key], _SCALAR_RULES.get(key))
        except ConfigError as err:
            raise _fail(source, key, str(err).removeprefix(f"{key}: ")) from err
    if raw.get("seeds") == []:
        raise _fail(source, "seeds", "expected a non-empty list of integers, got []")


def _check_kinds(tasks: dict[str, str | None], methods: dict[str, dict[str, Any]], source: str) -> None:
    """Every method must apply to every task's kind (ETL's probes are defined for classification and regression)."""
    for task in tasks:
        kind = TASKS.get(task).kind
        for name in methods:
            kinds = METHODS.get(name).task_kinds
            if kind not in kinds:
                raise _fail(source, "methods", f"method {name!r} does not apply to task {task!r} ({kind}); it takes "
                                               f"{' and '.join(kinds)} tasks")


def parse_spec(raw: dict[str, Any], source: str = "spec") -> ExperimentSpec:
    """Validate a spec mapping (see the presets for examples) into an :class:`ExperimentSpec`."""
    allowed = {f.name for f in dataclasses.fields(ExperimentSpec)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(source, unknown[0], f"unknown section; a spec has {sorted(allowed)}")
    for key in ("tasks", "methods", "compressions"):
        if not raw.get(key):
            raise _fail(source, key, "missing or empty")
    _check_scalars(raw, source)
    backbone = raw.get("backbone", DEFAULT_BACKBONE)
    _known(BACKBONES, backbone, source, "backbone")
    weights = raw.get("backbone_weights")
    if weights is not None and not weights_path(weights).is_file():
        raise _fail(source, "backbone_weights", f"weights file {weights_path(weights)} does not exist (a relative "
                                                f"path is looked up under the models root, $ETLBENCH_MODELS)")
    try:
        check_backbone(backbone, weights)  # built once now, not failing in every trial of the sweep
    except ConfigError as err:
        raise _fail(source, err.key, str(err)) from err
    methods = _methods(raw["methods"], source)
    tasks, also_test = _tasks(raw["tasks"], raw.get("data_root"), source)
    _check_kinds(tasks, methods, source)
    return ExperimentSpec(
        name=str(raw.get("name", Path(source).stem)), tasks=tasks, also_test=also_test,
        methods=methods, compressions=_compressions(raw["compressions"], methods, source),
        seeds=tuple(raw.get("seeds", [0])), backbone=backbone, backbone_weights=weights,
        input_size=raw.get("input_size"), data_root=raw.get("data_root"), max_train=raw.get("max_train"),
        budget_of=raw.get("budget_of", "params"), threads=raw.get("threads", 1), gpus=float(raw.get("gpus", 0)),
        transfer=_section(raw.get("transfer"), source, "transfer", TRANSFER),
        recovery=_section(raw.get("recovery"), source, "recovery", RECOVERY),
        measure=_section(raw.get("measure"), source, "measure", MeasureConfig()))
