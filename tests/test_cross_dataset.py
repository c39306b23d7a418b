"""Cross-dataset evaluation: other label codings reconciled by each task (or a clear error), and every stored model
of a run scored on another dataset without touching the run's own rows."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etlbench.config import parse_spec
from etlbench.data.canonical import FaceData
from etlbench.data.synthetic import make_synthetic_faces
from etlbench.errors import LabelError, MissingLabels, SpecError
from etlbench.evaluate import evaluation_set
from etlbench.tasks import create_task
from etlbench.tasks.face import age_group_of, age_ranges


def _data(n: int = 6, **labels: np.ndarray) -> FaceData:
    arrays = {"images": np.zeros((n, 16, 16, 1), np.uint8), **labels}
    return FaceData("other", arrays, "other.npz")


def test_emotion_classes_are_matched_by_name_and_scored_on_those_present() -> None:
    data = _data(4, label=np.array([0, 1, 2, 0]), class_names=np.array(["Happiness", "Anger", "neutral"]))
    view = evaluation_set(create_task("emotion"), data)
    assert view.split == "all" and view.targets.tolist() == [3, 0, 6, 3]  # FER2013's coding
    assert "3 classes" in view.scoring.note and "disgust, fear, sad, surprise" in view.scoring.note
    outputs = np.zeros((4, 7))
    outputs[:, 1] = 9.0  # disgust would win, but the dataset has no disgust: the best of its own classes counts
    outputs[:, 6] = 1.0
    outputs[0, 3] = 2.0
    assert view.scoring.predictions(outputs).tolist() == [3, 6, 6, 6]
    with pytest.raises(LabelError, match=r"other.npz: class_names: cannot reconcile the class name\(s\) \['contempt"):
        evaluation_set(create_task("emotion"), _data(2, label=np.array([0, 1]), class_names=np.array(["happy",
                                                                                                        "contempt"])))


def test_age_groups_are_scored_as_group_accuracy() -> None:
    names = ["0-2", "3-9", "(25, 32)", "more than 70"]
    ranges = age_ranges(names)
    assert ranges.tolist() == [[0, 2], [3, 9], [25, 32], [70, np.inf]]
    assert age_group_of(np.array([1.0, 9.4, 20.0, 40.0, 99.0]), ranges).tolist() == [0, 1, 2, 2, 3]  # nearest
    view = evaluation_set(create_task("age"), _data(3, age_group=np.array([0, 2, 3]),
                                                    age_group_names=np.array(names)))
    assert view.scoring.metric_name == "age_group_accuracy" and view.scoring.higher_is_better
    predictions = view.scoring.predictions(np.array([[1.5], [60.0], [80.0]]))
    assert view.scoring.evaluate(predictions, view.targets) == {"age_group_accuracy": pytest.approx(2 / 3)}
    folder_style = evaluation_set(create_task("age"), _data(2, age=np.array([1, 0], np.uint8),
                                                            age_names=np.array(["20-29", "30-39"])))
    assert folder_style.targets.tolist() == [1, 0] and folder_style.scoring.metric_name == "age_group_accuracy"
    with pytest.raises(LabelError, match=r"cannot read '\(32, 25\)' as an age range"):
        age_ranges(["(32, 25)"])
    with pytest.raises(LabelError, match="cannot read 'adults' as an age range"):
        evaluation_set(create_task("age"), _data(1, age_group=np.array([0]), age_group_names=np.array(["adults"])))


def test_genders_are_matched_by_name_and_a_gender_only_set_scores_gender_only() -> None:
    data = _data(3, gender=np.array([0, 1, 1]), gender_names=np.array(["Female", "Male"]))
    view = evaluation_set(create_task("gender"), data)
    assert view.targets.tolist() == [1, 0, 0] and view.scoring.note == "genders matched by name (0 female, 1 male) " \
        "to 0 male, 1 female"
    with pytest.raises(MissingLabels, match="'age'"):
        evaluation_set(create_task("age"), data)
    with pytest.raises(LabelError, match=r"\['other'\]"):
        evaluation_set(create_task("gender"), _data(1, gender=np.array([0]), gender_names=np.array(["other"])))


def test_a_split_dataset_is_scored_on_its_test_split() -> None:
    view = evaluation_set(create_task("gender"), _data(3, gender=np.array([0, 1, 1]), split=np.array([0, 2, 2])))
    assert (view.split, len(view.targets)) == ("test", 2)


TINY = {"tasks": {"gender": {"dataset": "synthetic"}}, "max_train": 64, "threads": 1, "seeds": [1],
        "transfer": {"epochs": 1, "batch_size": 16, "precision": "fp32"},
        "recovery": {"max_steps": 2, "batch_size": 16, "precision": "fp32"},
        "measure": {"threads": 1, "batches": [1], "repeats": 3, "max_seconds": 0.3, "idle_wait": 5}}


def test_a_spec_refuses_an_extra_test_set_it_cannot_score(tmp_path: Path) -> None:
    path = tmp_path / "ages.npz"
    np.savez(path, images=np.zeros((2, 16, 16, 1), np.uint8), age=np.array([3.0, 40.0]))
    spec = {**TINY, "name": "x", "methods": ["magnitude"], "compressions": [2],
            "tasks": {"gender": {"dataset": "synthetic", "also_test": [str(path)]}}}
    with pytest.raises(SpecError, match=r"tasks.gender.also_test\[0\].*missing label array 'gender'"):
        parse_spec(spec)


@pytest.mark.slow
def test_every_stored_model_is_scored_on_another_dataset(tmp_path: Path, no_data_root: None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from etlbench.cli import main
    from etlbench.runner.execute import run_experiment

    arrays = make_synthetic_faces(n=200, seed=7)  # other faces, genders coded the other way round, no splits
    other = tmp_path / "other_faces.npz"
    np.savez_compressed(other, images=arrays["images"], gender=1 - arrays["gender"],
                        gender_names=np.array(["female", "male"]), age=arrays["age"])
    spec = parse_spec({**TINY, "name": "cross", "methods": ["magnitude"], "compressions": [2], "seeds": [0],
                       "tasks": {"gender": {"dataset": "synthetic", "also_test": [str(other)]}}})
    out = tmp_path / "run"
    run_experiment(spec, out, workers=1, show_progress=False)
    db = out / "results.sqlite"
    own_rows = sqlite3.connect(db).execute("SELECT row FROM trials").fetchall()
    evaluations = pd.DataFrame([r for r in _evaluations(db)])
    assert len(evaluations) == 1 and evaluations["status"].tolist() == ["ok"]
    row = evaluations.iloc[0]
    assert (row["split"], row["n"], row["in_domain"]) == ("all", 200, False)
    assert row["retention"] == pytest.approx(row["metric"] / row["baseline_metric"])
    assert set(row["group_metrics"]) == {"gender", "age_band"}

    # the run's own dataset: the in-domain scores of the stored models equal those their rows hold
    assert main(["evaluate", str(out), "--dataset", "synthetic", "--no-report"]) == 0
    trial = pd.read_csv(out / "results.csv").iloc[0]
    inside = next(r for r in _evaluations(db) if r["in_domain"])
    assert inside["metric"] == pytest.approx(trial["metric"], abs=1e-6)
    assert inside["baseline_metric"] == pytest.approx(trial["baseline_metric"], abs=1e-6)
    assert sqlite3.connect(db).execute("SELECT row FROM trials").fetchall() == own_rows  # never touched
    capsys.readouterr()
    assert main(["evaluate", str(out), "--dataset", "synthetic", "--skip-scored", "--json", "--no-report"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluated"] == {"ok": 0, "failed": 0}  # scored above: not again
    board = (out / "leaderboard.md").read_text()
    assert "Cross-dataset" in board and "other_faces" in board


def _evaluations(db: Path) -> list[dict]:
    return [json.loads(r) for (r,) in sqlite3.connect(db).execute("SELECT row FROM evaluations")]
