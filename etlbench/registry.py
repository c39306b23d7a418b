"""One registry mechanism for every kind of plugin (after timm's ``_registry.py``).

A registry maps names to objects (factories, task classes, dataset specs, pruning methods). An entry is
either an object (registered with the decorator) or lazy: a target ``"package.module:attribute"`` and a
description, imported on the first ``get``/``entry`` of its name, so that listing names and descriptions
imports nothing. The built-in plugins are lazy entries declared in :mod:`etlbench.plugins` (torch-free, so
``etlbench list`` starts fast); third-party packages register with the decorator or add theirs through the
entry-point group ``etlbench.<kind>`` (for example ``etlbench.methods``): each entry point is loaded on the
registry's first use and either registers itself on import or is registered under the entry point's name.

>>> r = Registry("widgets")
>>> @r.register("blue", description="A blue widget.")
... def blue(): return "blue"
>>> r.get("blue")()
'blue'
>>> r.names("b*")
['blue']
>>> r.declare("path", "pathlib:PurePosixPath", "A path, imported on first use.")
>>> r.describe()["path"], str(r.get("path")("a", "b"))
('A path, imported on first use.', 'a/b')
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from etlbench import plugins
from etlbench.errors import EtlbenchError

T = TypeVar("T")


class UnknownNameError(EtlbenchError, KeyError):
    """Raised for a name that no plugin of this kind registered; lists the close matches."""

    def __init__(self, kind: str, name: str, known: list[str]):
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        singular = kind.removesuffix("s")
        msg = f"Unknown {singular} {name!r}.{hint} Known {kind}: {', '.join(sorted(known)) or '(none)'}."
        super().__init__(msg)
        self.kind, self.name, self.close_matches = kind, name, close

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T | None  # None while a lazy entry's target is not imported yet
    description: str
    target: str | None = None  # a lazy entry's "package.module:attribute"

    @property
    def loaded(self) -> bool:
        return self.target is None or self.obj is not None


def _first_doc_line(obj: Any) -> str:
    """The first sentence of the docstring's first paragraph, on one line."""
    paragraph = " ".join((inspect.getdoc(obj) or "").strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


class Registry(Generic[T]):
    """Named plugins of one kind. A name ending in ``/`` registers a family (``timm/`` serves
    ``timm/resnet18``): its object is called with the rest of the name as first argument. With ``name_attr``,
    registration (or loading a lazy entry) sets that attribute of the object to its registered name (so a
    method's errors name it)."""

    def __init__(self, kind: str, *, name_attr: str | None = None):
        self.kind = kind
        self.name_attr = name_attr
        self._entries: dict[str, Entry[T]] = {}
        self._entry_points_loaded = False

    def register(self, name: str, *, description: str | None = None) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, description or _first_doc_line(obj))
            self._name(obj, name)
            return obj

        return add

    def declare(self, name: str, target: str, description: str) -> None:
        """A lazy entry: ``target`` (``"package.module:attribute"``) is imported on the first ``get`` or ``entry``
        of ``name``; its names and ``description`` are listed without importing it."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(name, None, description, target)

    def _name(self, obj: Any, name: str) -> None:
        if self.name_attr is not None:
            setattr(obj, self.name_attr, name)

    def _load(self, e: Entry[T]) -> Entry[T]:
        """The entry with its object: a lazy entry's target is imported (once) and named."""
        if e.loaded:
            return e
        module, _, attribute = e.target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attribute.split("."):
            obj = getattr(obj, part)
        self._name(obj, e.name)
        e = self._entries[e.name] = replace(e, obj=obj)
        return e

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=f"etlbench.{self.kind}"):
            obj = ep.load()
            if ep.name not in self._entries and not inspect.ismodule(obj):
                self.register(ep.name)(obj)

    def _entries_now(self) -> dict[str, Entry[T]]:
        self._load_entry_points()
        return self._entries

    def _find(self, name: str) -> Entry[T]:
        """The entry that serves ``name`` (itself, or its family's), as it is: a lazy one is not imported."""
        entries = self._entries_now()
        if name in entries:
            return entries[name]
        for family, e in entries.items():
            if family.endswith("/") and name.startswith(family) and len(name) > len(family):
                return e
        raise UnknownNameError(self.kind, name, list(entries))

    def entry(self, name: str) -> Entry[T]:
        """The entry that serves ``name``, with its object (a lazy entry's target is imported now)."""
        return self._load(self._find(name))

    def get(self, name: str) -> T:
        """The registered object; a family's object is bound to the rest of the name."""
        e = self.entry(name)
        if e.name.endswith("/") and name != e.name:
            rest = name[len(e.name) :]
            return _bind_family(e.obj, rest)
        return e.obj

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries_now() if fnmatch.fnmatchcase(n, pattern))

    def describe(self) -> dict[str, str]:
        return {n: self._entries_now()[n].description for n in self.names()}

    def __contains__(self, name: str) -> bool:
        try:
            self._find(name)
        except UnknownNameError:
            return False
        return True


def _bind_family(obj: Any, rest: str) -> Any:
    def bound(*args: Any, **kwargs: Any) -> Any:
        return obj(rest, *args, **kwargs)

    bound.__doc__ = obj.__doc__
    return bound


BACKBONES: Registry = Registry("backbones")
TASKS: Registry = Registry("tasks")
DATASETS: Registry = Registry("datasets")
METHODS: Registry = Registry("methods", name_attr="name")


def _declare_builtins() -> None:
    """The built-in plugins of :mod:`etlbench.plugins`: lazy entries, and the dataset specs as they are."""
    for registry, table in ((BACKBONES, plugins.BACKBONES), (TASKS, plugins.TASKS), (METHODS, plugins.METHODS)):
        for name, builtin in table.items():
            registry.declare(name, builtin.target, builtin.description)
    for spec in plugins.DATASETS:
        DATASETS.register(spec.name, description=spec.description)(spec)


_declare_builtins()

register_backbone = BACKBONES.register
register_task = TASKS.register
register_dataset = DATASETS.register
register_method = METHODS.register
