"""Cross-dataset evaluation: every stored model of a run (each setting's transfer baseline and every pruned model)
scored on another canonical dataset of the same task, stored in the run's database keyed by trial and the dataset's
content fingerprint, beside the trials' own rows and never changing them (:meth:`ResultsStore.put_evaluation`).

A model scored only on its own test split hides how it generalises. The other dataset's labels are reconciled by
the task (:meth:`etlbench.tasks.Task.scoring`: emotion classes by name and only those it has, age groups as group
accuracy, genders by name) and the note of each row says how; a dataset without labels for a task skips that task.
Its test split is used where it has splits, else all of it. A dataset equal to a trial's own (the same fingerprint)
is scored too and marked ``in_domain``: that adds per-group metrics to the rows of runs that predate them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from etlbench.backbones import create_backbone
from etlbench.backbones.base import Preprocess
from etlbench.data import SPLITS, DatasetError, FaceData, load_dataset
from etlbench.data.datasets import resize_images, subgroups
from etlbench.errors import LabelError, MissingLabels, ResultsError
from etlbench.identity import code_version
from etlbench.model_io import load_pruned, load_tensors
from etlbench.results import ResultsStore, failure
from etlbench.tasks import Task, create_task
from etlbench.tasks.base import Scoring, group_metrics
from etlbench.train import TrainConfig, build_task_model, predict
from etlbench.transfer import TransferSpec, checkpoint_path
from etlbench.trial import retention


@dataclass
class EvaluationSet:
    """A dataset seen through one task: the images, reconciled targets and subgroups its models are scored on."""

    task: Task
    dataset: FaceData
    scoring: Scoring
    images: np.ndarray
    targets: np.ndarray
    groups: dict[str, np.ndarray]
    group_names: dict[str, tuple[str, ...]]
    split: str  # "test", or "all" for a dataset without splits
    _resized: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def score(self, model: nn.Module, preprocess: Preprocess, size: tuple[int, int]) -> dict[str, Any]:
        """The model's metrics on the set and per subgroup (images resized once per input size)."""
        if size not in self._resized:
            self._resized[size] = resize_images(self.images, size)
        predictions = self.scoring.predictions(predict(model, self._resized[size], preprocess, size))
        metrics = self.scoring.evaluate(predictions, self.targets)
        return {"metric": metrics[self.scoring.metric_name], "metrics": metrics,
                "group_metrics": group_metrics(self.scoring, predictions, self.targets, self.groups, self.group_names)}


def evaluation_set(task: Task, dataset: FaceData) -> EvaluationSet:
    """``dataset``'s test split (all of it without splits) as ``task`` scores it; a label that cannot be reconciled
    is an error naming the file (:class:`MissingLabels` where it has none for the task)."""
    arrays = dataset.arrays
    if task.kind == "verification":
        raise MissingLabels(f"{dataset.source}: cross-dataset evaluation of verification is not supported yet")
    try:
        scoring = task.scoring(arrays)
        found = task.groups(arrays)
    except LabelError as err:
        raise type(err)(f"{dataset.source}: {err}") from err
    mask, split = task.sample_mask(arrays), "all"
    if "split" in arrays:
        mask, split = mask & (arrays["split"] == SPLITS["test"]), "test"
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        raise DatasetError(f"{dataset.source}: no {split} samples for task {task.name}")
    return EvaluationSet(task, dataset, scoring, dataset.images[idx], scoring.targets[idx], subgroups(found, idx),
                         {a: g.names for a, g in found.items()}, split)


def setting_of(spec: dict[str, Any]) -> TransferSpec:
    """The setting (a resolved :class:`TransferSpec`) of a stored trial spec (``trials.spec``), fields that the
    storing code did not have at their defaults."""
    stored = spec["setting"]
    known = {f.name for f in fields(TransferSpec)}
    train = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored["train"].items()
                           if k in {f.name for f in fields(TrainConfig)}})
    return TransferSpec(**{k: v for k, v in stored.items() if k in known and k != "train"}, train=train)


def _placeholder_targets(task: Task) -> np.ndarray:
    """Train targets of the right shape for building a head whose buffers a saved model then overwrites."""
    return np.zeros((1, task.num_outputs), np.float32) if task.kind == "regression" else np.zeros(1, np.int64)


def baseline_checkpoint(setting: TransferSpec, cache: Path) -> Path:
    """The transfer baseline of ``setting`` under ``cache``: by today's identity, else the one checkpoint of the same
    task, backbone and seed trained on the same data (a run of older code names it by that code's identity)."""
    path = checkpoint_path(setting, cache)
    if path.is_file():
        return path
    stem = f"transfer-{setting.task}-{setting.backbone.replace('/', '_')}-seed{setting.seed}-"
    found = [p for p in sorted(cache.glob(f"{stem}*.pt"))
             if json.loads(load_tensors(p, "a transfer baseline")["meta"]["row"]).get("data_fingerprint")
             == setting.data_fingerprint]
    if len(found) != 1:
        raise ResultsError(f"{cache}: expected one transfer baseline {stem}*.pt trained on data "
                           f"{setting.data_fingerprint}, found {len(found)}")
    return found[0]


class _Scorer:
    """Builds stored models, each setting's source network and baseline score once."""

    def __init__(self, view: EvaluationSet, cache: Path):
        self.view, self.cache = view, cache
        self._sources: dict[tuple, Any] = {}
        self._baselines: dict[Path, dict[str, Any]] = {}

    def source(self, setting: TransferSpec) -> Any:
        key = (setting.backbone, setting.backbone_weights)
        if key not in self._sources:
            self._sources[key] = create_backbone(*key)
        return self._sources[key]

    def score(self, setting: TransferSpec, path: Path, cut: str | None = None, baseline: bool = False
              ) -> dict[str, Any]:
        """The scores of the model saved at ``path`` (a pruned model, or the ``baseline`` checkpoint)."""
        task, source = self.view.task, self.source(setting)
        model = build_task_model(source, task, _placeholder_targets(task), cut=cut, seed=setting.seed)
        if baseline:
            model.load_state_dict(load_tensors(path, "a transfer baseline saved by etlbench")["state_dict"])
        else:
            model = load_pruned(model, str(path))
        return self.view.score(model.eval(), source.preprocess, setting.input_hw(source))

    def baseline(self, setting: TransferSpec) -> dict[str, Any]:
        path = baseline_checkpoint(setting, self.cache)
        if path not in self._baselines:
            self._baselines[path] = self.score(setting, path, baseline=True)
        return self._baselines[path]

    def row(self, trial: dict[str, Any], spec: dict[str, Any], out: Path) -> dict[str, Any]:
        """The evaluation row of one stored trial; a failure is a row that says why."""
        view, scoring = self.view, self.view.scoring
        row: dict[str, Any] = {
            "trial_id": trial["trial_id"], "fingerprint": view.dataset.fingerprint, "dataset": view.dataset.name,
            "split": view.split, "n": len(view.targets), "in_domain": view.dataset.fingerprint ==
            trial.get("data_fingerprint"), "task": trial["task"], "method": trial["method"],
            "compression": trial.get("compression"), "seed": trial["seed"], "metric_name": scoring.metric_name,
            "higher_is_better": scoring.higher_is_better, "note": scoring.note, "code_version": code_version()}
        try:
            setting = setting_of(spec)
            base = self.baseline(setting)
            own = self.score(setting, out / trial["model_file"], cut=trial.get("cut_layer"))
        except Exception as err:  # one model that fails never ends the evaluation of the others
            return {**row, **failure(err)}
        return {**row, "status": "ok", **own, "baseline_metric": base["metric"],
                "baseline_group_metrics": base["group_metrics"],
                "retention": retention(own["metric"], base["metric"], scoring.higher_is_better)}


def _stored(store: ResultsStore, task: str | None, ids: set[str] | None, done: set[str]
            ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The rows (and stored specs) of the trials that saved a model, of ``task`` (or all) and ``ids`` (or all), but
    not those in ``done``."""
    specs = store.specs()
    return [(row, specs[row["trial_id"]]) for row in store.rows(ids)
            if row.get("model_file") and row.get("status") in ("trained", "ok") and task in (None, row.get("task"))
            and row["trial_id"] not in done]


def evaluate_run(out_dir: str | Path, dataset: str, task: str | None = None, data_root: str | None = None, *,
                 ids: set[str] | None = None, again: bool = True, log: Callable[[str], None] = print
                 ) -> dict[str, Any]:
    """Score every stored model of the run in ``out_dir`` (of ``task``, or of every task the dataset has labels for;
    of the trials ``ids``, or all) on ``dataset`` (a canonical ``.npz`` or a registered name) and store the rows;
    ``again=False`` skips the models already scored on it. Returns a summary. A model that fails to load or score
    becomes a failed evaluation row; the others go on."""
    out = Path(out_dir)
    if not (out / "results.sqlite").is_file():
        raise ResultsError(f"{out / 'results.sqlite'}: no results database (run `etlbench run --out {out}` first)")
    data = load_dataset(dataset, data_root)
    start, counts, skipped = time.perf_counter(), {"ok": 0, "failed": 0}, {}
    with ResultsStore(out / "results.sqlite") as store:
        scored = store.evaluations()
        done = set() if again or scored.empty else \
            set(scored.loc[(scored["fingerprint"] == data.fingerprint) & (scored["status"] == "ok"), "trial_id"])
        trials = _stored(store, task, ids, done)
        if not trials and (done or ids is not None):  # all scored before, or none of a run's trials left a model
            return {"dataset": data.name, "fingerprint": data.fingerprint, "evaluated": counts, "skipped": {},
                    "seconds": time.perf_counter() - start}
        if not trials:
            raise ResultsError(f"{out}: no stored models" + (f" of task {task!r}" if task else "") + " to evaluate")
        for name in sorted({row["task"] for row, _ in trials}):
            try:
                view = evaluation_set(create_task(name), data)
            except MissingLabels as err:
                if task is not None:
                    raise
                skipped[name] = str(err)
                log(f"{name}: skipped ({err})")
                continue
            scorer = _Scorer(view, out / "cache" / "transfer")
            for row, spec in [(r, s) for r, s in trials if r["task"] == name]:
                result = scorer.row(row, spec, out)
                store.put_evaluation(result)
                counts[result["status"]] += 1
                log(f"{name} {row['method']} {row.get('compression')} seed {row['seed']} on {data.name}: "
                    + (f"{result['metric_name']} {result['metric']:.4g}, retention {result['retention']:.3f}"
                       if result["status"] == "ok" else result["error"]))
    if not any(counts.values()):
        raise MissingLabels(f"{data.source}: no labels for any task of the run: " + "; ".join(skipped.values()))
    return {"dataset": data.name, "fingerprint": data.fingerprint, "evaluated": counts, "skipped": skipped,
            "seconds": time.perf_counter() - start}
