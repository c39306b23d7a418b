"""What a data root (or one file) holds (``etlbench data verify``): every canonical npz, per split and per label, its
image size, content fingerprint (the ``data_fingerprint`` of result rows) and sha256, and whatever is invalid: an
unreadable file, a failed canonical check (:func:`~etlbench.data.canonical.load_npz`), labels a registered task of
the dataset refuses (the task's own checks, :func:`etlbench.data.datasets.task_data`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from etlbench.data.canonical import SPLITS, FaceData, load_npz
from etlbench.errors import DatasetError, EtlbenchError
from etlbench.plugins import DatasetSpec
from etlbench.prepare.common import sha256_of
from etlbench.registry import DATASETS, TASKS

_MAX_CLASSES = 20  # an integer label with at most this many values (or with a names array) is shown as a histogram
_MAX_COLUMNS = 3  # a numeric label of at most this many columns is summarised per column; wider arrays are named


@dataclass
class FileReport:
    """One file: what it holds (lines to print) and what is wrong with it (nothing: valid)."""

    path: Path
    dataset: str | None
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def files_under(target: Path) -> list[Path]:
    """``target`` itself (a file) or every ``.npz`` under it (a data root), sorted."""
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise DatasetError(f"{target}: not found (expected a data root or a canonical .npz)")
    return sorted(p for p in target.rglob("*.npz") if p.is_file())


def registered(path: Path) -> DatasetSpec | None:
    """The registered dataset whose file ``path`` is (by its path under a data root)."""
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        if isinstance(spec, DatasetSpec) and spec.relative_path and path.as_posix().endswith("/" + spec.relative_path):
            return spec
    return None


def verify_file(path: Path) -> FileReport:
    """The report of one file."""
    spec = registered(path.resolve())
    report = FileReport(path, spec.name if spec else None)
    try:
        data = load_npz(path, spec.name if spec else path.stem)
    except DatasetError as err:
        report.problems.append(str(err))
        return report
    images = data.images
    report.lines.append(f"images {len(images):,} x {images.shape[1]}x{images.shape[2]}x{images.shape[3]} "
                        f"({'gray' if images.shape[3] == 1 else 'RGB'}); fingerprint {data.fingerprint}; "
                        f"sha256 {sha256_of(path)}")
    report.lines.append(", ".join(f"{k} {v:,}" for k, v in data.split_counts().items()))
    report.lines += _labels(data.arrays)
    _check_tasks(data, spec, report)
    return report


def _labels(arrays: dict[str, np.ndarray]) -> list[str]:
    """One line per label array (one row per image): a histogram per split, or min/mean/max per split and column."""
    n = len(arrays["images"])
    split = arrays.get("split")
    parts = {s: split == v for s, v in SPLITS.items()} if split is not None else {"all": np.ones(n, bool)}
    lines, other = [], []
    for key, a in arrays.items():
        if key in ("images", "split") or a.ndim == 0 or len(a) != n or a.dtype.kind not in "biuf":
            continue
        names = arrays.get("class_names" if key == "label" else f"{key}_names")
        if a.ndim == 1 and a.dtype.kind in "biu" and (names is not None or len(np.unique(a)) <= _MAX_CLASSES):
            per = [f"{s} {_histogram(a[m], names)}" for s, m in parts.items()]
        elif a.ndim <= 2 and a.reshape(n, -1).shape[1] <= _MAX_COLUMNS:
            cols = a.reshape(n, -1)
            heads = [str(c) for c in names] if names is not None and len(names) == cols.shape[1] else \
                [str(i) if cols.shape[1] > 1 else "" for i in range(cols.shape[1])]
            per = [f"{s} " + ", ".join(_stats(cols[m, i], heads[i]) for i in range(cols.shape[1]))
                   for s, m in parts.items()]
        else:
            other.append(f"{key} ({'x'.join(map(str, a.shape[1:]))} {a.dtype} per image)")
            continue
        lines.append(f"{key} ({a.dtype}): " + "; ".join(per))
    if other:
        lines.append("also: " + ", ".join(other))
    if "pair_fold" in arrays:
        fold, same = arrays["pair_fold"], arrays.get("pair_same", np.zeros(len(arrays["pair_fold"])))
        folds, counts = np.unique(fold, return_counts=True)
        lines.append(f"pairs: {len(fold):,} in {len(folds)} folds ({', '.join(map(str, counts))}); "
                     f"same {int((same == 1).sum()):,}, different {int((same == 0).sum()):,}")
    return lines


def _histogram(values: np.ndarray, names: np.ndarray | None) -> str:
    """``name count, ...`` (few values), or how many values and how many rows each (many)."""
    kinds, counts = np.unique(values, return_counts=True)
    if len(kinds) > _MAX_CLASSES:
        return f"{len(kinds):,} values, {counts.min()}..{counts.max()} rows each"
    return ", ".join(f"{_name(v, names)} {c}" for v, c in zip(kinds, counts, strict=True)) or "(none)"


def _name(value: object, names: np.ndarray | None) -> str:
    i = int(value)
    return f"{names[i]}" if names is not None and 0 <= i < len(names) else str(value)


def _stats(values: np.ndarray, column: str) -> str:
    lead = f"{column} " if column else ""
    if not len(values):
        return f"{lead}(none)"
    finite = values[np.isfinite(values)]
    bad = f" ({len(values) - len(finite)} not finite)" if len(finite) < len(values) else ""
    if not len(finite):
        return f"{lead}none finite"
    return f"{lead}{finite.min():.4g}..{finite.max():.4g} mean {finite.mean():.4g}{bad}"


def _check_tasks(data: FaceData, spec: DatasetSpec | None, report: FileReport) -> None:
    """Each registered task of the dataset reads it with its own checks; any refusal is a problem. For another
    file, the tasks whose labels it holds are tried and named (their refusals are notes, not problems)."""
    from etlbench.data.datasets import task_data
    from etlbench.tasks import create_task

    names = spec.tasks if spec is not None else [t for t in TASKS.names() if create_task(t).label_key in data.arrays]
    usable = []
    for name in names:
        try:
            task_data(create_task(name), data)
            usable.append(name)
        except EtlbenchError as err:
            text = f"task {name} refuses it: {err}"
            (report.problems if spec is not None else report.lines).append(text)
    report.lines.append(f"tasks: {', '.join(usable) or 'none'}" + ("" if spec else " (an unregistered file: the "
                                                                    "tasks whose label arrays it holds were tried)"))


def verify(target: str | Path) -> list[FileReport]:
    """The reports of ``target`` (a file, or every npz under a data root)."""
    return [verify_file(path) for path in files_under(Path(target))]
