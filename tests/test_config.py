"""Experiment specs are validated as a whole, with errors naming the source, section and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from etlbench.config import SpecError, load_spec, parse_spec, preset_names

VALID = {"tasks": ["gender"], "methods": {"etl": {"epsilon": 0.02}, "magnitude": {}}, "compressions": [4, "auto"]}


def test_presets_parse_and_expand_into_the_plan() -> None:
    assert {"smoke", "quick", "reference"} <= set(preset_names())
    quick = load_spec("quick")
    trials = quick.trials()
    assert len(trials) == 4 * 4 * 2 and len({t.trial_id() for t in trials}) == len(trials)
    assert {t.recovery.max_steps for t in trials} == {150}  # one recovery budget for every method
    reference = load_spec("reference")
    # 'auto' (ETL's own operating point) only for ETL: 4 tasks x (4 methods x 5 budgets + 1) x 3 seeds
    assert len(reference.trials()) == 4 * (4 * 5 + 1) * 3
    assert load_spec("smoke").tasks == {"gender": "synthetic"}


def test_overrides_and_files(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("tasks: [age]\nmethods: [random]\ncompressions: [2]\nseeds: [0, 1]\n")
    spec = load_spec(path=path, data_root="/data")
    assert spec.name == "mine" and spec.data_root == "/data" and len(spec.trials()) == 2
    etl = parse_spec(VALID)
    assert [t.compression for t in etl.trials() if t.method == "etl"] == [4.0, None]
    assert [t.compression for t in etl.trials() if t.method == "magnitude"] == [4.0]


@pytest.mark.parametrize(("change", "message"), [
    ({"budgets": [4]}, "spec: budgets: unknown section"),
    ({"tasks": ["gendr"]}, "tasks.gendr: Unknown task 'gendr'. Did you mean: gender"),
    ({"tasks": {"gender": {"dataset": "utk"}}}, "tasks.gender.dataset: Unknown dataset 'utk'"),
    ({"methods": {"magnitude": {"epsilon": 1}}}, "methods.magnitude.epsilon: the method does not take"),
    ({"methods": ["prune-it"]}, "methods.prune-it: Unknown method"),
    ({"compressions": [0.5]}, "compressions[0]: 0.5 is not a ratio of at least 1"),
    ({"compressions": []}, "compressions: missing or empty"),
    ({"backbone": "resnet"}, "backbone: Unknown backbone 'resnet'"),
    ({"recovery": {"epoch": 1}}, "recovery.epoch: unknown key"),
    ({"seeds": "0"}, "seeds: expected a list of integers"),
])
def test_errors_name_the_key(change: dict, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**VALID, **change})
    assert message in str(err.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(path=tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [gender\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path=bad)
    with pytest.raises(SpecError, match="unknown preset 'quik'"):
        load_spec("quik")
