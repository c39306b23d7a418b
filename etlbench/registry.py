"""One registry mechanism for every kind of plugin (after timm's ``_registry.py``).

A registry maps names to objects (factories, task classes, dataset specs, pruning methods). Built-in
plugins register with a decorator; third-party packages add theirs through the entry-point group
``etlbench.<kind>`` (for example ``etlbench.methods``): each entry point is loaded on first use and either
registers itself on import or is registered under the entry point's name.

>>> r = Registry("widgets")
>>> @r.register("blue", description="A blue widget.")
... def blue(): return "blue"
>>> r.get("blue")()
'blue'
>>> r.names("b*")
['blue']
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

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
    obj: T
    description: str


def _first_doc_line(obj: Any) -> str:
    """The first sentence of the docstring's first paragraph, on one line."""
    paragraph = " ".join((inspect.getdoc(obj) or "").strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


class Registry(Generic[T]):
    """Named plugins of one kind. A name ending in ``/`` registers a family (``timm/`` serves
    ``timm/resnet18``): its object is called with the rest of the name as first argument. With ``name_attr``,
    registration sets that attribute of the object to its registered name (so a method's errors name it)."""

    def __init__(self, kind: str, builtin: str | None = None, name_attr: str | None = None):
        self.kind = kind
        self.builtin = builtin  # the module whose import registers the built-in plugins
        self.name_attr = name_attr
        self._entries: dict[str, Entry[T]] = {}
        self._entry_points_loaded = False

    def register(self, name: str, *, description: str | None = None) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, description or _first_doc_line(obj))
            if self.name_attr is not None:
                setattr(obj, self.name_attr, name)
            return obj

        return add

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        if self.builtin:
            importlib.import_module(self.builtin)
        for ep in importlib.metadata.entry_points(group=f"etlbench.{self.kind}"):
            obj = ep.load()
            if ep.name not in self._entries and not inspect.ismodule(obj):
                self.register(ep.name)(obj)

    def _entries_now(self) -> dict[str, Entry[T]]:
        self._load_entry_points()
        return self._entries

    def entry(self, name: str) -> Entry[T]:
        entries = self._entries_now()
        if name in entries:
            return entries[name]
        for family, e in entries.items():
            if family.endswith("/") and name.startswith(family) and len(name) > len(family):
                return e
        raise UnknownNameError(self.kind, name, list(entries))

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
            self.entry(name)
        except UnknownNameError:
            return False
        return True


def _bind_family(obj: Any, rest: str) -> Any:
    def bound(*args: Any, **kwargs: Any) -> Any:
        return obj(rest, *args, **kwargs)

    bound.__doc__ = obj.__doc__
    return bound


BACKBONES: Registry = Registry("backbones", "etlbench.backbones")
TASKS: Registry = Registry("tasks", "etlbench.tasks")
DATASETS: Registry = Registry("datasets", "etlbench.data")
METHODS: Registry = Registry("methods", "etlbench.methods", name_attr="name")

register_backbone = BACKBONES.register
register_task = TASKS.register
register_dataset = DATASETS.register
register_method = METHODS.register
