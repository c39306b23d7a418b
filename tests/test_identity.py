"""Identities: what changes a trial id, a baseline's key or a cache key, and what must not.

The code version hashes only the code that shapes a row's numbers: an edit of the report, the command line or
the runner keeps every id; an edit of training changes them all. Data enter identities by name and content,
never by the folder they were read from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import etlbench
from etlbench.methods import PruneContext
from etlbench.train import TrainConfig
from etlbench.transfer import TransferSpec
from etlbench.trial import TrialSpec

REPORT_ONLY = ("report/page.py", "cli.py", "runner/execute.py")

# Run in a copy of the package: its etlbench, its code version and the id of one fixed trial on a setting it
# resolves itself (synthetic faces: no data root).
VERSION_SCRIPT = """
import json, etlbench
from etlbench.identity import code_version
print(json.dumps({"file": etlbench.__file__, "code": code_version()}))
"""
TRIAL_SCRIPT = """
import json, etlbench
from etlbench.identity import code_version
from etlbench.train import TrainConfig
from etlbench.transfer import TransferSpec
from etlbench.trial import TrialSpec
setting = TransferSpec(task="gender", dataset="synthetic", max_train=64, seed=1,
                       train=TrainConfig(epochs=1, batch_size=16, precision="fp32")).resolved()
trial = TrialSpec(setting, method="magnitude", compression=4.0)
print(json.dumps({"file": etlbench.__file__, "code": code_version(), "trial": trial.trial_id(),
                  "setting": setting.key()}))
"""


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of the installed package in a folder of its own (the copy's parent goes first on PYTHONPATH)."""
    root = tmp_path / "copy"
    shutil.copytree(Path(etlbench.__file__).parent, root / "etlbench", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def in_copy(root: Path, script: str) -> dict:
    """Run ``script`` with the copy at ``root`` imported instead of the installed package."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("ETLBENCH_DATA", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).is_relative_to(root)  # the copy was imported, not the installed package
    return out


def append(root: Path, relative: str, text: str) -> None:
    path = root / "etlbench" / relative
    path.write_text(path.read_text() + text)


def test_code_version_follows_only_the_results_shaping_code(package_copy: Path) -> None:
    original = in_copy(package_copy, VERSION_SCRIPT)["code"]
    for relative in REPORT_ONLY:  # the report, the command line and the runner shape no number
        append(package_copy, relative, "\n# a comment\nREPORT_ONLY_EDIT = 1\n")
    assert in_copy(package_copy, VERSION_SCRIPT)["code"] == original
    append(package_copy, "train.py", "\n# a comment: not code, so no other numbers\n")
    assert in_copy(package_copy, VERSION_SCRIPT)["code"] == original
    append(package_copy, "train.py", "\nRESULTS_EDIT = 1\n")  # training code: every id changes
    edited = in_copy(package_copy, VERSION_SCRIPT)["code"]
    assert edited != original
    append(package_copy, "methods/baselines.py", "\nANOTHER_EDIT = 1\n")  # a method's code too
    assert in_copy(package_copy, VERSION_SCRIPT)["code"] not in (original, edited)


@pytest.mark.slow
def test_trial_ids_follow_only_the_results_shaping_code(package_copy: Path) -> None:
    original = in_copy(package_copy, TRIAL_SCRIPT)
    for relative in REPORT_ONLY:
        append(package_copy, relative, "\n# a comment\nREPORT_ONLY_EDIT = 1\n")
    report_edit = in_copy(package_copy, TRIAL_SCRIPT)
    assert (report_edit["trial"], report_edit["setting"]) == (original["trial"], original["setting"])
    append(package_copy, "train.py", "\nRESULTS_EDIT = 1\n")
    train_edit = in_copy(package_copy, TRIAL_SCRIPT)
    assert train_edit["code"] != original["code"]
    assert train_edit["trial"] != original["trial"] and train_edit["setting"] != original["setting"]


def gender_arrays(n: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"images": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            "split": np.array([0, 0, 0, 0, 1, 1, 2, 2], np.uint8)[:n], "gender": np.array([0, 1] * (n // 2), np.uint8)}


def test_the_same_data_anywhere_has_one_key_and_other_data_another(tmp_path: Path) -> None:
    arrays = gender_arrays()
    changed = {**arrays, "gender": arrays["gender"].copy()}
    changed["gender"][0] = 1 - changed["gender"][0]  # one label differs
    for folder, content in (("a", arrays), ("b", arrays), ("c", changed)):
        (tmp_path / folder).mkdir()
        np.savez_compressed(tmp_path / folder / "faces.npz", **content)

    def spec(folder: str) -> TransferSpec:
        return TransferSpec(task="gender", dataset=str(tmp_path / folder / "faces.npz")).resolved()

    a, b, c = spec("a"), spec("b"), spec("c")
    assert a.data_fingerprint == b.data_fingerprint != c.data_fingerprint
    assert a.key() == b.key()  # the same arrays in another folder: the same baseline
    assert a.key() != c.key()  # one label changed: another baseline
    assert TrialSpec(a, "random", 2.0).trial_id() == TrialSpec(b, "random", 2.0).trial_id()
    assert TrialSpec(a, "random", 2.0).trial_id() != TrialSpec(c, "random", 2.0).trial_id()
    assert a.data_key != b.data_key  # ...though each reads its own file


def test_synthetic_and_real_data_never_share_a_key(no_data_root: None, real_data_root: Path, tmp_path: Path) -> None:
    synthetic = TransferSpec(task="gender").resolved()
    real = TransferSpec(task="gender", data_root=str(real_data_root)).resolved()
    assert (synthetic.dataset, real.dataset) == ("synthetic", "utkface")
    assert synthetic.key() != real.key()
    assert TrialSpec(synthetic, "magnitude", 4.0).trial_id() != TrialSpec(real, "magnitude", 4.0).trial_id()
    # the task's own dataset, named or left implicit, is the same baseline
    named = TransferSpec(task="gender", dataset="utkface", data_root=str(real_data_root)).resolved()
    assert named.key() == real.key()
    assert TrialSpec(named, "magnitude", 4.0).trial_id() == TrialSpec(real, "magnitude", 4.0).trial_id()
    # the same files under another data root path are the same data
    link = tmp_path / "elsewhere"
    link.symlink_to(real_data_root, target_is_directory=True)
    moved = TransferSpec(task="gender", data_root=str(link)).resolved()
    assert moved.data_root != real.data_root and moved.key() == real.key()


def test_a_spec_must_be_resolved_and_its_key_follows_its_fields(no_data_root: None) -> None:
    with pytest.raises(ValueError, match="not resolved"):
        TransferSpec(task="gender").key()
    fingerprints = dict(data_fingerprint="0123456789abcdef", weights_fingerprint="76543210fedcba98")
    spec = TransferSpec(task="gender", dataset="synthetic", **fingerprints)
    assert spec.key() == TransferSpec(task="gender", dataset="synthetic", **fingerprints).key()
    changes = [dict(seed=1), dict(max_train=10), dict(input_size=96), dict(backbone="mobilefacenet"),
               dict(train=TrainConfig(epochs=1)), dict(data_fingerprint="fedcba9876543210"), dict(task="age"),
               dict(threads=2), dict(weights_fingerprint="random")]
    keys = {spec.key(), *(replace(spec, **c).key() for c in changes)}
    assert len(keys) == 1 + len(changes)
    # where the data and the weights are read from is not what they are
    assert replace(spec, data_root="/somewhere/else", backbone_weights="/other/copy.dat").key() == spec.key()


def test_method_caches_are_keyed_by_setting_and_parameters() -> None:
    def ctx(setting_key: str) -> PruneContext:
        return PruneContext(None, None, (8, 8), 0, 0, 0, lambda: None, setting_key)  # type: ignore[arg-type]

    key = ctx("s1").cache_key("etl-probes", probe_samples=64, descriptor="mean")
    assert key == ctx("s1").cache_key("etl-probes", descriptor="mean", probe_samples=64)
    assert key != ctx("s2").cache_key("etl-probes", probe_samples=64, descriptor="mean")
    assert key != ctx("s1").cache_key("etl-probes", probe_samples=128, descriptor="mean")
    assert key != ctx("s1").cache_key("other-stage", probe_samples=64, descriptor="mean")


def test_default_parameters_and_integer_floats_are_one_trial(no_data_root: None) -> None:
    setting = TransferSpec(task="gender", dataset="synthetic", max_train=64, seed=1).resolved()
    plain = TrialSpec(setting, method="etl", compression=4)
    assert plain.trial_id() == TrialSpec(setting, "etl", 4.0, method_params={"epsilon": 0.01}).trial_id()
    assert TrialSpec(setting, "etl", 4.0, method_params={"epsilon": 0}).trial_id() == \
        TrialSpec(setting, "etl", 4.0, method_params={"epsilon": 0.0}).trial_id()
    assert TrialSpec(setting, "etl", 4.0, method_params={"epsilon": 0.02}).trial_id() != plain.trial_id()
    assert plain.method_params["probe_samples"] == 2000  # every default is part of the spec that is hashed
