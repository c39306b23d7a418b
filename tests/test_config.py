"""Experiment specs are validated as a whole, with errors naming the source, section and key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from etlbench.config import SpecError, load_spec, parse_spec, preset_names
from etlbench.plan import plan
from etlbench.registry import DATASETS
from tests.conftest import REPO

RATIO = "expected a finite ratio of at least 1 and at most 1,000,000 (or 'auto'), got"
VALID = {"tasks": ["gender"], "methods": {"etl": {"epsilon": 0.02}, "magnitude": {}}, "compressions": [4, "auto"]}


def tiny_dataset(n: int = 10) -> dict[str, np.ndarray]:
    """A valid canonical dataset of ``n`` 16 x 16 images (the smallest allowed) with every task's labels (every split
    present)."""
    rng = np.random.default_rng(0)
    return {"images": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), "split": np.arange(n, dtype=np.uint8) % 3,
            "pose": rng.uniform(-60, 60, (n, 3)).astype(np.float32), "pose_valid99": np.ones(n, bool),
            "label": rng.integers(0, 7, n), "age": rng.uniform(1, 90, n).astype(np.float32),
            "gender": rng.integers(0, 2, n).astype(np.uint8), "pair_fold": np.zeros(n, np.int64)}


@pytest.fixture
def fake_data_root(tmp_path: Path) -> Path:
    """Tiny valid files where the registered real datasets are expected: planning reads and fingerprints them."""
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        if spec.relative_path is not None:
            spec.path(tmp_path).parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(spec.path(tmp_path), **tiny_dataset())
    return tmp_path


def test_presets_parse_and_expand_into_the_plan(fake_data_root: Path) -> None:
    assert {"smoke", "quick", "reference", "paper"} <= set(preset_names())
    quick = load_spec("quick", data_root=str(fake_data_root))
    trials = plan(quick)
    assert len(trials) == 4 * 4 * 2 and len({t.trial_id() for t in trials}) == len(trials)
    assert {t.setting.dataset for t in trials} == {"aflw2000", "fer2013", "utkface"}
    assert all(t.setting.data_fingerprint for t in trials)  # every setting is resolved before anything runs
    assert {t.recovery.max_steps for t in trials} == {150}  # one recovery budget for every method
    assert {t.measure.threads for t in trials} == {2} and {t.threads for t in trials} == {1}
    reference = load_spec("reference", data_root=str(fake_data_root))
    # 'auto' (ETL's own operating point) only for ETL: 4 tasks x (4 methods x 5 budgets + 1) x 3 seeds
    assert len(plan(reference)) == 4 * (4 * 5 + 1) * 3
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
    monkeypatch.setattr("etlbench.config.check_backbone", lambda name, weights: built.append((name, weights)))
    paper = load_spec("paper", data_root=str(fake_data_root))
    assert built == [("vggface16", "vgg_face_dag.pth")]
    assert (paper.backbone, paper.input_size, paper.gpus) == ("vggface16", 224, 1.0)
    assert {t.setting.backbone_weights for t in plan(paper)} == {"vgg_face_dag.pth"}


def test_real_presets_need_their_data(tmp_path: Path, no_data_root: None) -> None:
    with pytest.raises(SpecError, match=r"tasks\.head_pose\.dataset: dataset 'aflw2000' needs a data root"):
        load_spec("quick")
    with pytest.raises(SpecError, match=r"tasks\.head_pose\.dataset: dataset 'aflw2000' not found: expected the file"):
        load_spec("quick", data_root=str(tmp_path))


def test_overrides_and_files(tmp_path: Path, fake_data_root: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("tasks: [age]\nmethods: [random]\ncompressions: [2]\nseeds: [0, 1]\n")
    spec = load_spec(path=path, data_root=str(fake_data_root))
    assert spec.name == "mine" and spec.data_root == str(fake_data_root) and len(plan(spec)) == 2
    etl = plan(parse_spec({**VALID, "data_root": str(fake_data_root)}))
    assert [t.compression for t in etl if t.method == "etl"] == [4.0, None]
    assert [t.compression for t in etl if t.method == "magnitude"] == [4.0]


def test_backbone_override(fake_data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = REPO.parent / "shared" / "models"
    if not (models / "mobilefacenet_casia" / "068.ckpt").is_file():
        pytest.skip(f"the MobileFaceNet checkpoint is not under {models}")
    monkeypatch.setenv("ETLBENCH_MODELS", str(models))
    # `etlbench run --backbone`: the same plan on another network, as other trials
    quick = load_spec("quick", data_root=str(fake_data_root))
    mobile = load_spec("quick", data_root=str(fake_data_root), backbone="mobilefacenet")
    mobile_trials, quick_trials = plan(mobile), plan(quick)
    assert {t.backbone for t in mobile_trials} == {"mobilefacenet"} and len(mobile_trials) == len(quick_trials)
    assert not {t.trial_id() for t in mobile_trials} & {t.trial_id() for t in quick_trials}
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
                                        r"not a weights-only torch checkpoint"):
        load_spec("smoke", backbone="mobilefacenet", backbone_weights="broken.ckpt")


@pytest.mark.parametrize(("change", "message"), [
    ({"budgets": [4]}, "spec: budgets: unknown section"),
    ({"tasks": ["gendr"]}, "tasks.gendr: Unknown task 'gendr'. Did you mean: gender"),
    ({"tasks": {"gender": {"dataset": "utk"}}}, "tasks.gender.dataset: Unknown dataset 'utk'"),
    ({"methods": {"magnitude": {"epsilon": 1}}},
     "methods.magnitude.epsilon: method 'magnitude' does not take parameter 'epsilon'"),
    ({"methods": {"etl": {"epsilon": "abc"}}}, "methods.etl.epsilon: method 'etl': parameter epsilon must be a finite"),
    ({"methods": {"etl": {"epsilon": -1}}}, "methods.etl.epsilon: method 'etl': parameter epsilon must be at least 0"),
    ({"methods": {"taylor": {"batches": 2.5}}}, "methods.taylor.batches: "),
    ({"methods": {"random": {"policy": "sideways"}}}, "methods.random.policy: "),
    ({"methods": ["prune-it"]}, "methods.prune-it: Unknown method"),
    ({"compressions": [0.5]}, f"compressions[0]: {RATIO} 0.5"),
    ({"compressions": [4, float("nan")]}, f"compressions[1]: {RATIO} nan"),
    ({"compressions": [float("inf")]}, f"compressions[0]: {RATIO} inf"),
    ({"compressions": [True]},
     f"compressions[0]: {RATIO} True"),
    ({"compressions": ["auto"], "methods": ["magnitude"]},
     "compressions[0]: 'auto' needs a method that chooses its own operating point"),
    ({"compressions": []}, "compressions: missing or empty"),
    ({"backbone": "resnet"}, "backbone: Unknown backbone 'resnet'"),
    ({"recovery": {"epoch": 1}}, "recovery.epoch: unknown key"),
    ({"seeds": "0"}, "seeds: expected a list of integers, got '0'"),
    ({"seeds": []}, "seeds: expected a non-empty list of integers, got []"),
    ({"seeds": [0, 1.5]}, "seeds: expected a list of integers, got [0, 1.5]"),
    ({"measure": {"batch": [1]}}, "measure.batch: unknown key; measure takes"),
    ({"measure": {"threads": 0}}, "measure.threads: expected at least 1, got 0"),
    ({"threads": 0}, "threads: expected at least 1, got 0"),
    ({"threads": 1.5}, "threads: expected an integer, got 1.5"),
    ({"tasks": {"gender": {"dataset": "/nowhere/mine.npz"}}}, "tasks.gender.dataset: dataset file /nowhere/mine.npz"),
])
def test_errors_name_the_key(change: dict, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**VALID, **change})
    assert message in str(err.value)


def test_yaml_values_are_checked_as_written(tmp_path: Path) -> None:
    """What YAML makes of a value is checked, not what it looks like: .nan is a float, abc a string."""
    cases = {"methods: {etl: {epsilon: abc}}\ncompressions: [4]": "methods.etl.epsilon",
             "methods: [magnitude]\ncompressions: [auto]": "compressions[0]",
             "methods: [magnitude]\ncompressions: [.nan]": f"compressions[0]: {RATIO} nan",
             "methods: [magnitude]\ncompressions: [4]\nseeds: []": "seeds: expected a non-empty list",
             "methods: [magnitude]\ncompressions: [4]\nthreads: '2'": "threads: expected an integer"}
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"spec{i}.yaml"
        path.write_text(f"tasks: {{gender: {{dataset: synthetic}}}}\n{text}\n")
        with pytest.raises(SpecError) as err:
            load_spec(path=path)
        assert f"{path}: {message}" in str(err.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(path=tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [gender\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path=bad)
    with pytest.raises(SpecError, match="unknown preset 'quik'"):
        load_spec("quik")
