from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
import types
from pathlib import Path

import pytest

from etlbench.registry import BACKBONES, DATASETS, METHODS, TASKS, Registry, UnknownNameError, _first_doc_line

REPO = Path(__file__).resolve().parents[1]


def test_register_get_and_wildcards() -> None:
    r: Registry = Registry("widgets")

    @r.register("blue-small")
    def blue_small() -> str:
        """A small blue widget."""
        return "bs"

    r.register("red", description="A red one.")(lambda: "r")
    assert r.get("blue-small")() == "bs"
    assert r.names("blue*") == ["blue-small"]
    assert r.describe() == {"blue-small": "A small blue widget.", "red": "A red one."}
    assert "red" in r and "green" not in r


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(UnknownNameError) as err:
        TASKS.get("gendr")
    assert "Unknown task 'gendr'" in str(err.value)
    assert err.value.close_matches[0] == "gender"
    assert "head_pose" in str(err.value)


def test_duplicate_registration_is_an_error() -> None:
    r: Registry = Registry("widgets")
    r.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="registered twice"):
        r.register("a")(lambda: 2)


def test_family_binds_the_rest_of_the_name() -> None:
    r: Registry = Registry("widgets")
    r.register("fam/")(lambda rest, scale=1: rest * scale)
    assert r.get("fam/ab")(scale=2) == "abab"
    with pytest.raises(UnknownNameError):
        r.get("fam")


def test_builtin_plugins_are_registered() -> None:
    assert {"dlib-resnet29", "vggface16", "mobilefacenet", "timm/"} <= set(BACKBONES.names())
    assert set(TASKS.names()) >= {"head_pose", "emotion", "age", "gender"}


def test_third_party_plugins_come_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """A package that declares ``[project.entry-points."etlbench.methods"] mine = "pkg:Mine"`` is found."""

    class Mine:
        """A third-party method."""

    ep = importlib.metadata.EntryPoint("mine", "pkg:Mine", "etlbench.methods")
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [ep] if group == "etlbench.methods" else [])
    monkeypatch.setitem(__import__("sys").modules, "pkg", types.SimpleNamespace(Mine=Mine))
    r: Registry = Registry("methods")
    assert r.get("mine") is Mine
    assert r.describe()["mine"] == "A third-party method."
    assert METHODS.kind == "methods"


def test_registration_can_name_the_object() -> None:
    """With ``name_attr`` (as METHODS has), the registered object learns its name, so its errors can say it."""
    r: Registry = Registry("widgets", name_attr="name")

    class Widget:
        name = ""

    r.register("blue")(Widget)
    assert Widget.name == "blue" and r.get("blue") is Widget
    plain: Registry = Registry("widgets")

    class Other:
        pass

    plain.register("red")(Other)
    assert not hasattr(Other, "name")
    assert METHODS.name_attr == "name" and METHODS.get("magnitude").name == "magnitude"


def test_lazy_entries_are_imported_on_first_use_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A declared entry is listed without importing its target; ``get`` imports it and sets ``name_attr``."""
    pkg = types.ModuleType("lazy_pkg")
    imported: list[str] = []

    class Widget:
        name = ""

    def load(name: str) -> types.ModuleType:
        imported.append(name)
        return pkg

    pkg.Widget, pkg.family = Widget, lambda rest, k=1: rest * k
    monkeypatch.setattr(importlib, "import_module", load)
    r: Registry = Registry("widgets", name_attr="name")
    r.declare("w", "lazy_pkg:Widget", "A lazy widget.")
    r.declare("fam/", "lazy_pkg:family", "A lazy family.")
    assert r.names() == ["fam/", "w"] and r.describe()["w"] == "A lazy widget."
    assert "w" in r and "fam/x" in r and "v" not in r and imported == []
    assert r.get("w") is Widget and Widget.name == "w" and imported == ["lazy_pkg"]
    assert r.entry("w").loaded and r.entry("w").description == "A lazy widget."
    assert r.get("fam/ab")(k=2) == "abab"
    with pytest.raises(ValueError, match="registered twice"):
        r.register("w")(lambda: 0)
    with pytest.raises(ValueError, match="registered twice"):
        r.declare("w", "lazy_pkg:Widget", "again")


def test_every_builtin_target_loads_and_describes_itself() -> None:
    from etlbench import plugins
    from etlbench.methods import PruningMethod
    from etlbench.tasks import Task, create_task

    kinds = {"backbones": (BACKBONES, plugins.BACKBONES), "tasks": (TASKS, plugins.TASKS),
             "methods": (METHODS, plugins.METHODS)}
    for kind, (registry, table) in kinds.items():
        assert set(table) <= set(registry.names()), kind
        for name, builtin in table.items():
            entry = registry.entry(name)
            assert entry.loaded and entry.target == builtin.target, name
            assert entry.description == builtin.description and builtin.description.strip(), name
            obj = entry.obj
            if kind == "backbones":
                assert callable(obj) and not isinstance(obj, type), name
            elif kind == "tasks":
                assert issubclass(obj, Task) and obj.name == name, name
                assert builtin.metric == create_task(name).describe(), name  # `etlbench list tasks` shows it
            else:
                assert issubclass(obj, PruningMethod) and obj.name == name, name
                assert builtin.description == _first_doc_line(obj), name  # the class's docstring says it too
    assert {spec.name for spec in plugins.DATASETS} <= set(DATASETS.names())
    for spec in plugins.DATASETS:
        assert DATASETS.get(spec.name) is spec and spec.description.strip()


def _python(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_every_builtin_module_leaves_the_registries_as_declared() -> None:
    """The built-in modules do not register themselves (no second registration, no other description)."""
    out = _python("""
import importlib, pkgutil
import etlbench
from etlbench.registry import BACKBONES, DATASETS, METHODS, TASKS
def state():
    return {r.kind: {n: (e.description, e.target) for n, e in r._entries.items()}
            for r in (BACKBONES, DATASETS, METHODS, TASKS)}
before = state()
for package in ("etlbench.backbones", "etlbench.tasks", "etlbench.methods", "etlbench.data"):
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(info.name)
assert state() == before, (state(), before)
print("ok")
""")
    assert out.strip() == "ok"


def test_help_and_list_import_no_torch() -> None:
    """``etlbench --help`` and ``etlbench list KIND`` start fast: no torch, timm or scikit-learn."""
    out = _python("""
import contextlib, io, sys
from etlbench.cli import main
with contextlib.redirect_stdout(io.StringIO()) as text:
    for kind in ("methods", "tasks", "backbones", "datasets"):
        assert main(["list", kind]) == 0
    try:
        main(["--help"])
    except SystemExit as done:
        assert done.code == 0
assert "etl " in text.getvalue() and "usage: etlbench" in text.getvalue()
print(sorted(m for m in ("torch", "timm", "sklearn", "scipy") if m in sys.modules))
""")
    assert out.strip() == "[]"
