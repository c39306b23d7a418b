"""Who pays for compression: each task's subgroups from the dataset's own labels, the metric per group, and the
leaderboard's worst group, gap and their change against the unpruned baseline (Hooker et al. 2020)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etlbench.data import load_dataset, load_npz, task_data
from etlbench.errors import DatasetError, LabelError
from etlbench.report.groups import UNPRUNED, fairest, group_points, group_summary
from etlbench.results import ResultsStore
from etlbench.tasks import create_task
from etlbench.tasks.base import band_groups, group_metrics, label_groups


def _utk_like(n: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"images": np.zeros((n, 16, 16, 3), np.uint8), "age": np.array([5, 17, 18, 29, 30, 44, 45, 59, 60, 80,
                                                                             25, 35], np.uint8)[:n],
            "gender": rng.integers(0, 2, n).astype(np.uint8), "race": np.arange(n, dtype=np.uint8) % 5,
            "race_names": np.array(["white", "black", "asian", "indian", "others"]),
            "split": np.zeros(n, np.uint8)}


def test_each_task_groups_by_the_labels_its_dataset_has() -> None:
    arrays = _utk_like()
    assert set(create_task("age").groups(arrays)) == {"race", "gender"}
    gender = create_task("gender").groups(arrays)
    assert set(gender) == {"race", "gender", "age_band"}
    assert gender["race"].names == ("white", "black", "asian", "indian", "others")
    assert gender["gender"].names == ("0", "1")  # no gender_names array: named by index
    assert gender["age_band"].names == ("<18 years", "18-30 years", "30-45 years", "45-60 years", ">=60 years")
    np.testing.assert_array_equal(gender["age_band"].labels, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 1, 2])
    pose = {"images": arrays["images"], "pose": np.array([[-70.0, 0, 0], [29.9, 0, 0], [30, 0, 0], [-60, 0, 0]])}
    yaw = create_task("head_pose").groups(pose)["abs_yaw"]
    assert yaw.names == ("<30 deg", "30-60 deg", ">=60 deg")
    np.testing.assert_array_equal(yaw.labels, [2, 0, 1, 2])
    emotion = create_task("emotion").groups({"images": arrays["images"][:3], "label": np.array([0, 6, 3]),
                                             "class_names": np.array(["angry", "disgust", "fear", "happy", "sad",
                                                                      "surprise", "neutral"])})
    assert emotion["class"].names[6] == "neutral" and emotion["class"].labels.tolist() == [0, 6, 3]
    assert create_task("age").groups({"images": arrays["images"], "age": arrays["age"]}) == {}


def test_group_arrays_of_whole_numbers_of_any_dtype_and_unknowns() -> None:
    arrays = _utk_like()
    as_float = label_groups({**arrays, "race": arrays["race"].astype(np.float32)}, "race")
    np.testing.assert_array_equal(as_float.labels, arrays["race"])
    assert label_groups({**arrays, "gender": arrays["gender"].astype(bool)}, "gender").names == ("0", "1")
    unknown = np.where(np.arange(12) < 2, -1, arrays["race"]).astype(np.int8)  # -1: race not labelled
    task = create_task("age")
    out = group_metrics(task, np.zeros((12, 1)), np.ones((12, 1)), {"race": label_groups({**arrays, "race": unknown},
                                                                                         "race").labels},
                        {"race": ("white", "black", "asian", "indian", "others")})
    assert sum(g["n"] for g in out["race"].values()) == 10  # the unknowns are in no group
    folder_ages = {**arrays, "age": np.zeros(12, np.uint8), "age_names": np.array(["20-29"])}
    assert "age_band" not in create_task("gender").groups(folder_ages)  # group labels are not years


def test_a_malformed_group_array_is_an_error_that_names_file_and_array(tmp_path: Path) -> None:
    arrays = _utk_like()
    with pytest.raises(LabelError, match=r"group array 'race' must hold one whole number per image"):
        label_groups({**arrays, "race": arrays["race"][:-1]}, "race")
    with pytest.raises(LabelError, match="'race'"):
        label_groups({**arrays, "race": arrays["race"] + 0.5}, "race")
    arrays["split"] = np.arange(12, dtype=np.uint8) % 3
    np.savez(tmp_path / "d.npz", **{**arrays, "race": arrays["race"] + 0.5})
    with pytest.raises(DatasetError, match=r"d.npz: group array 'race'"):
        task_data(create_task("age"), load_npz(tmp_path / "d.npz"))
    assert band_groups(np.array([1.0]), (10,), "").names == ("<10", ">=10")


def test_group_metrics_are_the_metric_on_each_group() -> None:
    task = create_task("age")
    targets = np.array([[10.0], [20.0], [30.0], [40.0]], np.float32)
    predictions = np.array([[11.0], [24.0], [30.0], [50.0]], np.float32)
    out = group_metrics(task, predictions, targets, {"race": np.array([0, 0, 1, 3])},
                        {"race": ("white", "black", "asian", "indian", "others")})
    assert out == {"race": {"white": {"metric": 2.5, "n": 2}, "black": {"metric": 0.0, "n": 1},
                            "indian": {"metric": 10.0, "n": 1}}}  # empty groups left out


def test_task_data_carries_each_splits_groups(real_data_root: Path) -> None:
    data = task_data(create_task("gender"), load_dataset("utkface", real_data_root))
    names = data.group_names
    assert names["race"] == ("white", "black", "asian", "indian", "others")
    assert set(data.groups["test"]) == {"race", "gender", "age_band"}
    assert len(data.groups["test"]["race"]) == len(data.images["test"]) == 1600
    perfect = data.group_metrics("test", data.targets["test"])
    assert all(g["metric"] == 1.0 for groups in perfect.values() for g in groups.values())
    assert sum(g["n"] for g in perfect["race"].values()) == 1600


def _row(method: str, compression: float, seed: int, groups: dict, base: dict, status: str = "ok") -> dict:
    return {"trial_id": f"{method}-{compression}-{seed}", "task": "age", "method": method, "compression": compression,
            "seed": seed, "status": status, "metric_name": "mae_years", "higher_is_better": False,
            "group_metrics": {"race": {k: {"metric": v, "n": 10 + i} for i, (k, v) in enumerate(groups.items())}},
            "baseline_group_metrics": {"race": {k: {"metric": v, "n": 10} for k, v in base.items()}}}


@pytest.fixture
def group_trials() -> pd.DataFrame:
    rows = []
    for seed, base in enumerate(({"a": 5.0, "b": 7.0}, {"a": 5.0, "b": 8.0})):  # the baseline's worst: b
        rows += [_row("x", 4.0, seed, {"a": 6.0, "b": 9.0 + seed}, base),  # worst b, gap 3 / 4 (baseline 2 / 3)
                 _row("y", 4.0, seed, {"a": 5.0, "b": 7.5 + seed}, base)]  # gap 2.5 / 3.5
    rows.append(_row("x", 16.0, 0, {"a": 9.0, "b": 8.0}, {"a": 5.0, "b": 7.0}, status="failed"))
    return pd.DataFrame(rows)


def test_worst_group_gap_and_their_change_against_the_baseline(group_trials: pd.DataFrame) -> None:
    points = group_points(group_trials)
    assert len(points) == 4  # the failed row has no point
    x0 = points[(points["method"] == "x") & (points["seed"] == 0)].iloc[0]
    assert (x0["worst_group"], x0["worst"], x0["gap"], x0["baseline_worst"], x0["baseline_gap"]) == ("b", 9, 3, 7, 2)
    summary = group_summary(group_trials).set_index(["method", "target"])
    base = summary.loc[(UNPRUNED, "1x")]
    assert (base["worst"], base["gap"], base["seeds"]) == (7.5, 2.5, 2)
    x = summary.loc[("x", "4x")]
    assert (x["worst"], x["gap"], x["gap_change"], x["worst_change"]) == (9.5, 3.5, 1.0, 2.0)
    assert x["gap_change_ci95"] == 0.0  # the change is the same for both seeds
    y = summary.loc[("y", "4x")]
    assert y["gap_change"] == 0.5 and y["smallest_group"] == 10
    assert fairest(group_summary(group_trials)).iloc[0][["target", "method"]].tolist() == ["4x", "y"]


def test_the_unpruned_row_names_the_baselines_own_worst_group() -> None:
    rows = [_row("x", 4.0, 0, {"a": 6.0, "b": 9.0}, {"a": 8.0, "b": 7.0})]  # pruned: b is worst; unpruned: a
    summary = group_summary(pd.DataFrame(rows)).set_index("method")
    assert (summary.loc[UNPRUNED, "worst_group"], summary.loc["x", "worst_group"]) == ("a", "b")


def test_a_report_shows_who_pays_for_compression(group_trials: pd.DataFrame, tmp_path: Path) -> None:
    from etlbench.report import write_report

    full = group_trials.assign(retention=0.9, metric=7.0, baseline_metric=6.5, params=10.0, macs=100.0,
                               latency_ms=1.0)
    with ResultsStore(tmp_path / "results.sqlite") as store:
        run = store.start_run({"name": "groups", "backbone": "dlib-resnet29"}, {"cpu": "test"})
        for row in full.to_dict("records"):
            store.put({k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}, {}, run)
        assert "group_metrics" not in store.frame()  # nested: never in results.csv
        assert store.frame(curves=True)["group_metrics"].iloc[0]["race"]["a"]["metric"] == 6.0
    names = {Path(f).name for f in write_report(tmp_path, formats=("png",))["written"]}
    assert "age-group-gap.png" in names
    md = (tmp_path / "leaderboard.md").read_text()
    assert "who pays for compression" in md and "Fairest compression" in md
    assert re.search(r"^\| age \| race \| 4x \| y \| [+-][0-9.]+( ± [0-9.e+-]+)? \|$", md, re.MULTILINE), md
    assert "| race | x | 4x | b | 9.5 | 3.5 | +2 ± 0 | +1 ± 0 | 2 | 10 |" in md
    assert "| race | unpruned | 1x | b | 7.5 | 2.5 |  |  | 2 | 10 |" in md
