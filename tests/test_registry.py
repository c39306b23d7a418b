from __future__ import annotations

import importlib.metadata
import types

import pytest

from etlbench.registry import BACKBONES, METHODS, TASKS, Registry, UnknownNameError


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
