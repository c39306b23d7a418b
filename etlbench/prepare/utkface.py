"""UTKFace (Zhang, Song, Qi, "Age Progression/Regression by Conditional Adversarial Autoencoder", CVPR 2017) from
its "Aligned&Cropped Faces" archive or folder: labels from the file names, ``[age]_[gender]_[race]_[date&time]
.jpg.chip.jpg`` (or ``.jpg``). A name that does not parse is skipped and listed, never dropped silently."""

from __future__ import annotations

import re

import numpy as np

from etlbench.errors import DatasetError
from etlbench.prepare.archives import Source
from etlbench.prepare.common import (
    IMAGE_SUFFIXES,
    SEED,
    SPLIT_NAMES,
    Converted,
    decode_all,
    log,
    random_split,
    strings,
    unique_basenames,
)

GENDERS = ("male", "female")
RACES = ("white", "black", "asian", "indian", "others")
_NAME = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)\.jpg(\.chip\.jpg)?$")
MAX_AGE = 130  # the age task's range: an age above it is a malformed name


def convert(source: Source, *, size: int = 64, subsample: int | None = 8000, seed: int = SEED + 1,
            split: tuple[float, ...] = (0.7, 0.1, 0.2)) -> Converted:
    """UTKFace at ``size`` px RGB (PIL LANCZOS from the 200 px chips; no other crop). ``subsample``: a uniform
    random sample of that many valid images, ``numpy.random.default_rng(seed).choice(n, subsample,
    replace=False)`` over the valid file names sorted (``None``: all 23,702); the same generator then draws the
    split's permutation (``split``: train, val, test fractions). Rows are ordered by file name."""
    valid: dict[str, tuple[int, int, int]] = {}
    members: dict[str, str] = {}
    skipped: list[str] = []
    images = [n for n in source.names() if n.lower().endswith(IMAGE_SUFFIXES)]
    for base, member in unique_basenames(source, images).items():
        match = _NAME.match(base)
        if match is None or int(match.group(1)) > MAX_AGE:
            skipped.append(f"{member} (not age_gender_race_datetime.jpg[.chip.jpg] with age 0..{MAX_AGE}, "
                           "gender 0..1, race 0..4)")
            continue
        valid[base] = (int(match.group(1)), int(match.group(2)), int(match.group(3)))
        members[base] = member
    if not valid:
        raise DatasetError(f"{source.path}: no UTKFace images (named age_gender_race_datetime.jpg.chip.jpg)")
    names = sorted(valid)
    rng = np.random.default_rng(seed)
    if subsample is not None and subsample < len(names):
        if subsample < 1:
            raise DatasetError(f"subsample: expected at least 1 image, got {subsample}")
        names = [names[i] for i in np.sort(rng.choice(len(names), subsample, replace=False))]
    splits = random_split(len(names), split, rng)
    log(f"{source.path}: decoding {len(names):,} of {len(valid):,} valid images ({len(skipped)} skipped)")
    labels = np.array([valid[n] for n in names], np.uint8).reshape(-1, 3)
    return Converted({
        "images": decode_all(source, [members[n] for n in names], size, "rgb"),
        "age": labels[:, 0].copy(),
        "gender": labels[:, 1].copy(),
        "race": labels[:, 2].copy(),
        "split": splits,
        "gender_names": strings(GENDERS),
        "race_names": strings(RACES),
        "split_names": strings(SPLIT_NAMES),
        "source_file": strings(names),
    }, skipped)
