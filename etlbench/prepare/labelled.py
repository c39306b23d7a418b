"""A user's own labelled images, for any task: a folder (or zip, or tar) of ``class/xxx.jpg``, optionally under
``train/ val/ test/``, or a CSV of ``file``, the label column (named like the label key, e.g. ``label`` or
``age``) and an optional ``split`` column (train, val, test). Labels are class names (stored as indices, with
their names in ``class_names`` or ``<key>_names``) or, in a CSV whose labels are all numbers, numbers (float32:
regression, or integral class codes). Without given splits, a seeded split by fractions."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from etlbench.errors import ConfigError, DatasetError
from etlbench.prepare.archives import Source, safe_name
from etlbench.prepare.common import (
    IMAGE_SUFFIXES,
    SPLIT_NAMES,
    Color,
    Converted,
    decode_all,
    log,
    random_split,
    strings,
)

SPLIT_FOLDERS = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
_RESERVED = ("images", "split", "split_names", "source_file")


@dataclass(frozen=True)
class _Options:
    label_key: str
    size: int
    color: Color
    split: tuple[float, ...] | None
    seed: int
    classes: tuple[str, ...] | None
    crop: tuple[int, ...] | None

    def __post_init__(self) -> None:  # size, crop and split: checked by prepare() before the source is opened
        if not self.label_key.isidentifier() or self.label_key in _RESERVED:
            raise ConfigError(f"label_key: expected a name for the label array (e.g. label, age), not one of "
                              f"{', '.join(_RESERVED)}; got {self.label_key!r}", "label_key")


def convert_folder(source: Source, *, label_key: str = "label", size: int = 64, color: Color = "rgb",  # noqa: PLR0913
                   split: tuple[float, ...] | None = (0.7, 0.1, 0.2), seed: int = 0,
                   classes: tuple[str, ...] | None = None,
                   crop: tuple[int, ...] | None = None) -> Converted:
    """Images in class folders (the folder holding an image is its class), under ``train/``, ``val/`` and
    ``test/`` or not at all (then a seeded split by ``split`` fractions from ``numpy.random.default_rng(seed)``),
    resized to ``size`` x ``size`` (PIL LANCZOS; cropped first to ``crop``, x0,y0,x1,y1, where given) in ``color``.
    ``classes`` fixes the class order (default: sorted names); a class folder not in it is an error. ``split=None``
    writes no split array: a set only to test on (``etlbench evaluate``, ``also_test``)."""
    options = _Options(label_key, size, color, None if split is None else tuple(split), seed, classes,
                       None if crop is None else tuple(crop))
    members = [n for n in source.names() if n.lower().endswith(IMAGE_SUFFIXES)]
    if not members:
        raise DatasetError(f"{source.path}: no images (expected class/xxx.jpg, optionally under train/ val/ test/)")
    flat = [n for n in members if "/" not in n]
    if flat:
        raise DatasetError(f"{source.where(flat[0])}: an image outside any class folder (expected class/xxx.jpg)")
    given = [_split_folder(n) for n in members]
    inside = [m for m, s in zip(members, given, strict=True) if s is not None]
    outside = [m for m, s in zip(members, given, strict=True) if s is None]
    if inside and outside:
        raise DatasetError(f"{source.path}: {inside[0]!r} is under a split folder (train/val/test) but "
                           f"{outside[0]!r} is not; put every class folder under one, or none")
    return _converted(source, members, [n.split("/")[-2] for n in members], given, options, numeric=False)


def convert_csv(source: Source, *, label_key: str = "label", size: int = 64, color: Color = "rgb",  # noqa: PLR0913
                split: tuple[float, ...] | None = (0.7, 0.1, 0.2), seed: int = 0,
                classes: tuple[str, ...] | None = None,
                crop: tuple[int, ...] | None = None) -> Converted:
    """A CSV of ``file`` (relative to the CSV's folder), ``<label_key>`` and optionally ``split`` (train, val, test
    or 0, 1, 2; else a seeded split by fractions), as ``--src`` itself or the one CSV in a folder or archive of the
    images. Labels that are all numbers are stored as float32 (unless ``classes`` is given), others as class
    indices. Every row is checked, and every file found, before any image is decoded."""
    options = _Options(label_key, size, color, None if split is None else tuple(split), seed, classes,
                       None if crop is None else tuple(crop))
    tables = [source.names()[0]] if source.single_file else \
        [n for n in source.names() if n.lower().endswith(".csv")]
    if len(tables) != 1:
        raise DatasetError(f"{source.path}: expected one CSV of file and label, found {len(tables)}")
    rows = _read_table(source, tables[0], label_key)
    prefix = "" if source.single_file else tables[0].rpartition("/")[0]
    named = [safe_name(f"{prefix}/{file}" if prefix else file) for _, file, _, _ in rows]
    for (line, file, _, _), member in zip(rows, named, strict=True):
        if member is None:
            raise DatasetError(f"{source.where(tables[0])}: line {line}: image {file!r} would leave the folder")
    # beside a CSV given alone: only the files it names are looked at, not the rest of its folder
    images = Source(source.path.parent, only=named) if source.single_file else source
    try:
        files = set(images.names())
        members = []
        for (line, file, _, _), member in zip(rows, named, strict=True):
            if member not in files:
                raise DatasetError(f"{source.where(tables[0])}: line {line}: no image {file!r} in {images.path}")
            members.append(member)
        numeric = classes is None and all(_is_number(label) for _, _, label, _ in rows)
        return _converted(images, members, [r[2] for r in rows], [r[3] for r in rows], options, numeric)
    finally:
        if images is not source:
            images.close()


def _split_folder(member: str) -> int | None:
    parts = member.split("/")
    return SPLIT_FOLDERS.get(parts[-3].lower()) if len(parts) >= 3 else None


def _is_number(text: str) -> bool:
    try:
        return np.isfinite(float(text))
    except ValueError:
        return False


def _read_table(source: Source, member: str, label_key: str) -> list[tuple[int, str, str, int | None]]:
    """(line, file, label, split or None) per row of the CSV, checked."""
    where = source.where(member)
    reader = csv.DictReader(io.StringIO(source.read(member).decode("utf-8-sig", errors="replace"), newline=""))
    columns = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    for needed in ("file", label_key):
        if needed not in columns:
            raise DatasetError(f"{where}: no column {needed!r} (columns: {columns}; expected file, {label_key} and "
                               "optionally split)")
    rows = []
    for line, row in enumerate(reader, 2):
        file, label = (row.get("file") or "").strip(), (row.get(label_key) or "").strip()
        if not file or not label:
            raise DatasetError(f"{where}: line {line}: missing {'file' if not file else label_key + ' (the label)'}")
        value = (row.get("split") or "").strip().lower() if "split" in columns else None
        code = None if value is None else SPLIT_FOLDERS.get(value, {"0": 0, "1": 1, "2": 2}.get(value))
        if value is not None and code is None:
            raise DatasetError(f"{where}: line {line}: split {value!r} is none of train, val, test (or 0, 1, 2)")
        rows.append((line, file, label, code))
    if not rows:
        raise DatasetError(f"{where}: no rows")
    return rows


def _converted(source: Source, members: list[str], labels: list[str], given: list[int | None], options: _Options,
               numeric: bool) -> Converted:
    """The arrays of images ``members`` with ``labels`` and ``given`` splits (``None``: a seeded split)."""
    label_key, classes = options.label_key, options.classes
    if numeric:
        y = np.array([float(v) for v in labels], np.float32)
        names: dict[str, np.ndarray] = {}
    else:
        order = list(classes) if classes is not None else sorted(set(labels))
        unknown = sorted(set(labels) - set(order))
        if unknown:
            raise DatasetError(f"{source.path}: label {unknown[0]!r} is not among the classes {order}")
        y = np.array([order.index(v) for v in labels], np.int64 if len(order) > 255 else np.uint8)
        names = {"class_names" if label_key == "label" else f"{label_key}_names": strings(order)}
    if all(s is not None for s in given):
        splits = {"split": np.array(given, np.uint8), "split_names": strings(SPLIT_NAMES)}
    elif options.split is None:  # a set only to test on
        splits = {}
    else:
        splits = {"split": random_split(len(members), options.split, np.random.default_rng(options.seed)),
                  "split_names": strings(SPLIT_NAMES)}
    log(f"{source.path}: decoding {len(members):,} images")
    crop = options.crop
    images = decode_all(source, members, options.size, options.color, box=None if crop is None else lambda i: crop)
    return Converted({"images": images, label_key: y, **splits, **names, "source_file": strings(members)})
