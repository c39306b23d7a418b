"""Datasets from what a researcher can download: ``etlbench data prepare`` turns each dataset's usual
distribution into its canonical npz (:mod:`etlbench.data.canonical`), ``data verify`` says what a data root holds,
``data download`` fetches what may be fetched by script.

A registered dataset names its converter in :class:`~etlbench.plugins.DatasetSpec` (``converter``, a lazy
``package.module:function``); :data:`GENERIC` converts a user's own labelled folder or CSV. A converter is a
function ``convert(source, *, parameters...)`` of a :class:`~etlbench.prepare.archives.Source` whose keyword
parameters, with their type hints and defaults, are what a user may set; the defaults reproduce the staged files.
None of this imports torch, and it lives outside :mod:`etlbench.data` on purpose: converting is not part of the
results-shaping code (a trial names its data by content fingerprint), so editing a converter keeps every trial id.
"""

from __future__ import annotations

import importlib
import inspect
import re
import time
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from etlbench.checks import check_value
from etlbench.errors import ConfigError
from etlbench.plugins import DatasetSpec
from etlbench.registry import DATASETS

#: Converters of a user's own data (not registered datasets): written to ``DST/<name>/<name>_<size>.npz``.
GENERIC = {"folder": "etlbench.prepare.labelled:convert_folder", "csv": "etlbench.prepare.labelled:convert_csv"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Prepared:
    """What ``prepare`` wrote: the file, its counts, content fingerprint and sha256, the parameters used (every
    one, defaults included), what it skipped and how long it took."""

    dataset: str
    source: str
    path: str
    counts: dict[str, int]
    fingerprint: str
    sha256: str
    parameters: dict[str, Any]
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    replaced: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def converter(name: str) -> tuple[Callable[..., Any], DatasetSpec | None]:
    """The converter of dataset ``name`` (or of :data:`GENERIC`) and its spec (``None`` for a generic one)."""
    if name in GENERIC:
        return _load(GENERIC[name]), None
    spec = DATASETS.get(name)  # an unknown name is an error listing the known ones
    if not isinstance(spec, DatasetSpec) or spec.converter is None:
        known = sorted([*GENERIC, *converter_names()])
        raise ConfigError(f"dataset {name!r} has no converter (its file is generated or made elsewhere); datasets "
                          f"with one: {', '.join(known)}")
    return _load(spec.converter), spec


def converter_names() -> list[str]:
    """The registered datasets that have a converter."""
    return [n for n in DATASETS.names() if getattr(DATASETS.get(n), "converter", None)]


def _load(target: str) -> Callable[..., Any]:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def parameters(convert: Callable[..., Any]) -> dict[str, Any]:
    """A converter's parameters and their defaults (what a user may set)."""
    return {p.name: p.default for p in inspect.signature(convert).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def checked(convert: Callable[..., Any], name: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` checked against the converter's parameters (names and type hints); lists become tuples."""
    defaults, hints = parameters(convert), typing.get_type_hints(convert)
    out = {}
    for key, value in given.items():
        if key not in defaults:
            raise ConfigError(f"{name}: no parameter {key!r} (it takes {', '.join(defaults)})", key)
        value = tuple(value) if isinstance(value, list) else value
        check_value(f"{name}.{key}", value, hints.get(key))
        out[key] = value
    from etlbench.prepare.common import check_crop, check_fractions, check_size

    if out.get("split") is not None:  # shared parameters are checked before the source is opened
        check_fractions(out["split"])
    if "size" in out:
        check_size(out["size"])
    if "crop" in out:
        check_crop(out["crop"])
    return out


def output_path(spec: DatasetSpec | None, dst: Path, name: str | None, size: int) -> Path:
    """Where the file goes: ``DST/<relative_path>`` of a registered dataset, ``DST/<name>/<name>_<size>.npz`` else."""
    if spec is not None:
        return spec.path(dst)
    if not name:
        raise ConfigError("--name: folder and csv need the dataset's name (it names the file)", "name")
    if not _NAME.match(name):
        raise ConfigError(f"--name: expected a dataset name of letters, digits, '_', '-' or '.', got {name!r}", "name")
    if name in DATASETS:
        raise ConfigError(f"--name {name!r} is a registered dataset; prepare it by its own name, or choose another",
                          "name")
    return dst / name / f"{name}_{size}.npz"


def prepare(name: str, src: str | Path, dst: str | Path, params: dict[str, Any] | None = None,
            output_name: str | None = None) -> Prepared:
    """Convert ``src`` (a folder, zip, tar or file of dataset ``name``'s usual distribution, or of a generic
    ``folder``/``csv``) into its canonical npz under ``dst``, atomically, and check it by reading it back."""
    from etlbench.prepare.archives import Source
    from etlbench.prepare.common import write_canonical

    convert, spec = converter(name)
    given = checked(convert, name, params or {})
    if spec is None:
        output_path(None, Path(dst), output_name, 16)  # a bad --name fails before any work
    elif output_name is not None:
        raise ConfigError(f"--name is for folder and csv; {name} is written to DST/{spec.relative_path}", "name")
    start = time.monotonic()
    with Source(src) as source:
        converted = convert(source, **given)
    size = converted.arrays["images"].shape[1]
    written = write_canonical(converted.arrays, output_path(spec, Path(dst), output_name, size))
    if spec is not None and size != parameters(convert).get("size", size):
        converted.notes.append(f"written at {size} px to the registered path {spec.relative_path} (where "
                               "--data-root finds it), whatever size its name says")
    return Prepared(dataset=name if spec is not None else str(output_name), source=str(src), path=str(written.path),
                    counts=written.counts, fingerprint=written.fingerprint, sha256=written.sha256,
                    parameters={**parameters(convert), **given}, skipped=converted.skipped, notes=converted.notes,
                    seconds=round(time.monotonic() - start, 1), replaced=written.replaced)
