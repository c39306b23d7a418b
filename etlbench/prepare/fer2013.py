"""FER2013 (Goodfellow et al., "Challenges in Representation Learning: A report on three machine learning
contests", ICONIP 2013) from Kaggle's ``fer2013.csv`` (columns emotion, pixels, Usage; ``icml_face_data.csv``
too) or from the common image-folder copy (``train/<class>/Training_*.jpg``, ``test/<class>/PublicTest_*.jpg`` and
``PrivateTest_*.jpg``). The split is the official one, read from ``Usage`` or the file-name prefix: Training ->
train, PublicTest -> val, PrivateTest -> test."""

from __future__ import annotations

import csv
import io
import re

import numpy as np
from PIL import Image

from etlbench.errors import DatasetError
from etlbench.prepare.archives import Source
from etlbench.prepare.common import (
    IMAGE_SUFFIXES,
    SEED,
    SPLIT_NAMES,
    Converted,
    decode_all,
    largest_remainder,
    log,
    strings,
    to_array,
)

#: The standard FER2013 coding: ``label`` i is ``CLASSES[i]``.
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
USAGE = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
CSV_FILES = ("fer2013.csv", "icml_face_data.csv")
_IMAGE = re.compile(r"^(Training|PublicTest|PrivateTest)_\d+\.(jpg|jpeg|png)$", re.IGNORECASE)
_NATIVE = 48


def convert(source: Source, *, size: int = 48, subsample: int | None = 8000, seed: int = SEED) -> Converted:
    """FER2013 at ``size`` px gray (native 48: no resizing). ``subsample``: how many Training images to keep, a
    class-stratified proportional sample (per class, in class order, ``choice`` without replacement over its images
    sorted by file name, from one ``numpy.random.default_rng(seed)``; shares rounded by largest remainder);
    ``None`` keeps all 28,709. Val and test stay whole. Rows are sorted by (split, file name)."""
    csv_members = [n for n in source.names() if n.rsplit("/", 1)[-1].lower() in CSV_FILES
                   or (source.single_file and n.lower().endswith(".csv"))]
    if len(csv_members) > 1:
        raise DatasetError(f"{source.path}: holds {len(csv_members)} FER2013 csv files ({', '.join(csv_members)}); "
                           "point --src at one")
    skipped: list[str] = []
    if csv_members:
        names, labels, splits, pixels = _read_csv(source, csv_members[0])
    else:
        names, labels, splits, members = _read_folders(source, skipped)
    order = sorted(range(len(names)), key=lambda i: (splits[i], names[i]))
    keep = _subsample(np.array(labels)[order], np.array(splits)[order], subsample, seed)
    rows = [order[i] for i in keep]
    if csv_members:
        images = np.stack([to_array(Image.fromarray(pixels[i]), size) for i in rows])
    else:
        log(f"{source.path}: decoding {len(rows):,} images")
        images = decode_all(source, [members[i] for i in rows], size, "gray")
    return Converted({
        "images": images,
        "label": np.array([labels[i] for i in rows], np.uint8),
        "split": np.array([splits[i] for i in rows], np.uint8),
        "class_names": strings(CLASSES),
        "split_names": strings(SPLIT_NAMES),
        "source_file": strings([names[i] for i in rows]),
    }, skipped)


def _subsample(labels: np.ndarray, splits: np.ndarray, subsample: int | None, seed: int) -> list[int]:
    """The rows kept (in order): every val and test row, and the stratified train sample."""
    train = np.flatnonzero(splits == 0)
    if subsample is None or subsample >= len(train):
        return list(range(len(labels)))
    if subsample < 1:
        raise DatasetError(f"subsample: expected at least 1 train image, got {subsample}")
    per_class = [train[labels[train] == c] for c in range(len(CLASSES))]
    counts = largest_remainder([len(rows) for rows in per_class], subsample)
    rng = np.random.default_rng(seed)
    chosen = [rows[rng.choice(len(rows), k, replace=False)] for rows, k in zip(per_class, counts, strict=True)]
    kept = set(np.concatenate(chosen).tolist()) | set(np.flatnonzero(splits != 0).tolist())
    return sorted(kept)


def _read_folders(source: Source, skipped: list[str]) -> tuple[list[str], list[int], list[int], list[str]]:
    """File names, labels, splits and members of the image-folder layout (class from the folder, split from the
    file-name prefix)."""
    names, labels, splits, members = [], [], [], []
    for name in source.names():
        parts = name.split("/")
        if not parts[-1].lower().endswith(IMAGE_SUFFIXES):
            continue
        folder = parts[-2].lower() if len(parts) > 1 else ""
        match = _IMAGE.match(parts[-1])
        if folder not in CLASSES or match is None:
            why = f"class folder {folder!r} is none of {', '.join(CLASSES)}" if folder not in CLASSES else \
                "the name is not Training_N, PublicTest_N or PrivateTest_N"
            skipped.append(f"{name} ({why})")
            continue
        names.append(parts[-1])
        labels.append(CLASSES.index(folder))
        splits.append(USAGE[next(u for u in USAGE if u.lower() == match.group(1).lower())])
        members.append(name)
    seen: dict[tuple[int, str], str] = {}  # FER2013 has a few equal file names in two classes; one class, never
    for name, label, member in zip(names, labels, members, strict=True):
        if (label, name) in seen:
            raise DatasetError(f"{source.path}: {name!r} is there twice in class {CLASSES[label]} "
                               f"({seen[label, name]!r} and {member!r}); point --src at one copy of the dataset")
        seen[label, name] = member
    if not names:
        raise DatasetError(f"{source.path}: no FER2013 csv ({' or '.join(CSV_FILES)}) and no images in class "
                           f"folders ({', '.join(CLASSES)}) named Training_N, PublicTest_N or PrivateTest_N")
    return names, labels, splits, members


def _read_csv(source: Source, member: str) -> tuple[list[str], list[int], list[int], list[np.ndarray]]:
    """File names (``<Usage>_row<N>``), labels, splits and the 48x48 pixels of each row of a FER2013 csv."""
    where = source.where(member)
    text = source.read(member).decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in ("emotion", "pixels", "Usage") if c not in header]
    if missing:
        raise DatasetError(f"{where}: no column {missing[0]!r} (header {header}; expected emotion, pixels, Usage)")
    col = {c: header.index(c) for c in ("emotion", "pixels", "Usage")}
    names, labels, splits, pixels = [], [], [], []
    for line, row in enumerate(reader, 2):
        if not row:
            continue
        try:
            emotion, usage = int(row[col["emotion"]]), row[col["Usage"]].strip()
            values = np.array(row[col["pixels"]].split(), dtype=np.int64)
        except (ValueError, IndexError) as err:
            raise DatasetError(f"{where}: line {line}: not a row of emotion, pixels, Usage ({err})") from err
        if not 0 <= emotion < len(CLASSES):
            raise DatasetError(f"{where}: line {line}: emotion {emotion} is not a class 0..{len(CLASSES) - 1}")
        if usage not in USAGE:
            raise DatasetError(f"{where}: line {line}: Usage {usage!r} is none of {', '.join(USAGE)}")
        if values.size != _NATIVE * _NATIVE or values.min() < 0 or values.max() > 255:
            raise DatasetError(f"{where}: line {line}: expected {_NATIVE * _NATIVE} pixel values 0..255, got "
                               f"{values.size} values" + (f" in {values.min()}..{values.max()}" if values.size else ""))
        names.append(f"{usage}_row{line - 1:05d}")
        labels.append(emotion)
        splits.append(USAGE[usage])
        pixels.append(values.astype(np.uint8).reshape(_NATIVE, _NATIVE))
    if not names:
        raise DatasetError(f"{where}: no rows")
    return names, labels, splits, pixels
