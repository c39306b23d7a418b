"""Experiment specs are validated as a whole, with errors naming the source, section and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from etlbench.config import SpecError, load_spec, parse_spec, preset_names
from etlbench.registry import DATASETS
from tests.conftest import REPO

VALID = {"tasks": ["gender"], "methods": {"etl": {"epsilon": 0.02}, "magnitude": {}}, "compressions": [4, "auto"]}


@pytest.fixture
def fake_data_root(tmp_path: Path) -> Path:
    """Empty files where the registered real datasets are expected: enough for the spec's existence checks."""
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        if spec.relative_path is not None:
            spec.path(tmp_path).parent.mkdir(parents=True, exist_ok=True)
            spec.path(tmp_path).touch()
    return tmp_path


def test_presets_parse_and_expand_into_the_plan(fake_data_root: Path) -> None:
    assert {"smoke", "quick", "reference", "paper"} <= set(preset_names())
    quick = load_spec("quick", data_root=str(fake_data_root))
    trials = quick.trials()
    assert len(trials) == 4 * 4 * 2 and len({t.trial_id() for t in trials}) == len(trials)
    assert {t.recovery.max_steps for t in trials} == {150}  # one recovery budget for every method
    assert {t.measure.threads for t in trials} == {2} and {t.threads for t in trials} == {1}
    reference = load_spec("reference", data_root=str(fake_data_root))
    # 'auto' (ETL's own operating point) only for ETL: 4 tasks x (4 methods x 5 budgets + 1) x 3 seeds
    assert len(reference.trials()) == 4 * (4 * 5 + 1) * 3
    assert load_spec("smoke").tasks == {"gender": "synthetic"}


def test_paper_preset_needs_vggface_weights(fake_data_root: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETLBENCH_MODELS", str(tmp_path / "models"))
    with pytest.raises(SpecError, match=r"backbone_weights: weights file .*vgg_face_dag\.pth does not exist"):
        load_spec("paper", data_root=str(fake_data_root))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "vgg_face_dag.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SpecError, match=r"backbone_weights: 'vggface16' cannot be built from .*vgg_face_dag\.pth: "):
        load_spec("paper", data_root=str(fake_data_root))
    built: list[tuple[str, str]] = []  # real VGG-Face weights are 580 MB: check which file the spec loads
    monkeypatch.setattr("etlbench.config.create_backbone", lambda name, weights: built.append((name, weights)))
    paper = load_spec("paper", data_root=str(fake_data_root))
    assert built == [("vggface16", "vgg_face_dag.pth")]
    assert (paper.backbone, paper.input_size, paper.gpus) == ("vggface16", 224, 1.0)
    assert {t.backbone_weights for t in paper.trials()} == {"vgg_face_dag.pth"}


def test_real_presets_need_their_data(tmp_path: Path, no_data_root: None) -> None:
    with pytest.raises(SpecError, match=r"tasks\.head_pose\.dataset: dataset 'aflw2000' needs a data root"):
        load_spec("quick")
    with pytest.raises(SpecError, match=r"tasks\.head_pose\.dataset: dataset 'aflw2000' not found: expected the file"):
        load_spec("quick", data_root=str(tmp_path))


def test_overrides_and_files(tmp_path: Path, fake_data_root: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("tasks: [age]\nmethods: [random]\ncompressions: [2]\nseeds: [0, 1]\n")
    spec = load_spec(path=path, data_root=str(fake_data_root))
    assert spec.name == "mine" and spec.data_root == str(fake_data_root) and len(spec.trials()) == 2
    etl = parse_spec(VALID)
    assert [t.compression for t in etl.trials() if t.method == "etl"] == [4.0, None]
    assert [t.compression for t in etl.trials() if t.method == "magnitude"] == [4.0]


def test_backbone_override(fake_data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = REPO.parent / "shared" / "models"
    if not (models / "mobilefacenet_casia" / "068.ckpt").is_file():
        pytest.skip(f"the MobileFaceNet checkpoint is not under {models}")
    monkeypatch.setenv("ETLBENCH_MODELS", str(models))
    # `etlbench run --backbone`: the same plan on another network, as other trials
    quick = load_spec("quick", data_root=str(fake_data_root))
    mobile = load_spec("quick", data_root=str(fake_data_root), backbone="mobilefacenet")
    assert {t.backbone for t in mobile.trials()} == {"mobilefacenet"} and len(mobile.trials()) == len(quick.trials())
    assert not {t.trial_id() for t in mobile.trials()} & {t.trial_id() for t in quick.trials()}
    with pytest.raises(SpecError, match=r"backbone: Unknown backbone 'mobilefacent'"):
        load_spec("quick", data_root=str(fake_data_root), backbone="mobilefacent")


def test_backbone_weights_are_checked_before_the_run(tmp_path: Path, no_data_root: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETLBENCH_MODELS", str(tmp_path))  # no mobilefacenet_casia/068.ckpt there
    with pytest.raises(SpecError, match=r"preset smoke: backbone: 'mobilefacenet' cannot be built: MobileFaceNet "
                                        r"checkpoint not found: looked at .*068\.ckpt"):
        load_spec("smoke", backbone="mobilefacenet")
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(SpecError, match=r"backbone_weights: 'mobilefacenet' cannot be built from .*broken\.ckpt: "
                                        r"Weights only load failed"):
        load_spec("smoke", backbone="mobilefacenet", backbone_weights="broken.ckpt")


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
    ({"measure": {"batch": [1]}}, "measure.batch: unknown key; measure takes"),
    ({"measure": {"threads": 0}}, "measure: measurement needs threads >= 1"),
    ({"threads": 0}, "threads: expected a number of at least 1, got 0"),
    ({"tasks": {"gender": {"dataset": "/nowhere/mine.npz"}}}, "tasks.gender.dataset: dataset file /nowhere/mine.npz"),
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
