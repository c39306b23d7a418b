"""What every converter shares: decoding and resizing images (PIL, LANCZOS), seeded stratified subsamples and
splits, and writing the canonical npz atomically and checked (:mod:`etlbench.data.canonical`)."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from etlbench.data.canonical import MIN_IMAGE_SIZE, SPLITS, fingerprint, load_npz
from etlbench.errors import ConfigError, DatasetError
from etlbench.prepare.archives import Source, reason

#: The seed behind the staged files (``shared/data/README.md``): FER2013 uses it, UTKFace it + 1, AFLW2000-3D it + 2.
SEED = 20240601
SPLIT_NAMES = tuple(SPLITS)  # train, val, test
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_FORMATS = ("JPEG", "PNG", "BMP", "PPM", "TIFF", "WEBP", "GIF")
MAX_PIXELS = 50_000_000  # an image larger than this is refused before it is decoded (a decompression bomb)
Color = Literal["gray", "rgb"]
Box = tuple[float, float, float, float]


@dataclass
class Converted:
    """A converter's result: the arrays in the order they are written (the order shapes the file's bytes, not
    its fingerprint), the members it skipped with the reason, and notes for the user."""

    arrays: dict[str, np.ndarray]
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def log(message: str) -> None:
    """Progress of a long step, on stderr."""
    print(f"etlbench data: {message}", file=sys.stderr, flush=True)


def strings(values: Sequence[str]) -> np.ndarray:
    """Fixed-width unicode (``<U`` + the longest), so that the file loads without pickle."""
    return np.array(list(values), dtype=str)


def decode(data: bytes, where: str, color: Color) -> Image.Image:
    """An image's bytes, decoded whole, in ``color`` (``gray``: PIL mode L; ``rgb``: RGB). Anything that does not
    decode is an error naming ``where``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_FORMATS)
            if image.width * image.height > MAX_PIXELS:
                raise DatasetError(f"{where}: a {image.width}x{image.height} image, over {MAX_PIXELS:,} pixels")
            image.load()
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DatasetError(f"{where}: not a decodable image ({reason(err)})") from err
    mode = "L" if color == "gray" else "RGB"
    return image if image.mode == mode else image.convert(mode)


def to_array(image: Image.Image, size: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """``image`` cropped to ``box`` (x0, y0, x1, y1; outside the image: black) and resized to ``size`` x ``size``
    with PIL's LANCZOS filter (not at all where it is that size already): uint8 H x W x C."""
    if box is not None:
        image = image.crop(box)
    if image.size != (size, size):
        image = image.resize((size, size), Image.LANCZOS)
    a = np.asarray(image, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def decode_all(source: Source, names: Sequence[str], size: int, color: Color,
               box: Callable[[int], tuple[int, int, int, int] | None] | None = None) -> np.ndarray:
    """The images ``names`` of ``source`` as uint8 N x size x size x C, row i from ``names[i]`` (cropped to
    ``box(i)`` where given), read in the order the source stores them."""
    out = np.empty((len(names), size, size, 1 if color == "gray" else 3), np.uint8)
    row = {name: i for i, name in enumerate(names)}
    if len(row) != len(names):
        raise DatasetError(f"{source.path}: an image is named twice in the list to decode")
    start, shown = time.monotonic(), time.monotonic()
    for done, (name, data) in enumerate(source.read_many(names), 1):
        i = row[name]
        out[i] = to_array(decode(data, source.where(name), color), size, box(i) if box else None)
        if time.monotonic() - shown > 10 or done == len(names):
            shown = time.monotonic()
            log(f"decoded {done:,} of {len(names):,} images ({shown - start:.0f} s)")
    return out


def largest_remainder(weights: Sequence[float], total: int) -> list[int]:
    """``total`` shared in proportion to ``weights``: each gets the floor of its share, and the rest go one each to
    the largest fractional parts (ties: the earlier one). How the staged FER2013 file's per-class counts were
    rounded (8,000 of 28,709: 1113, 121, 1142, 2010, 1346, 884, 1384)."""
    weights = np.asarray(weights, np.float64)
    share = weights / weights.sum() * total
    counts = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts.tolist()


def check_fractions(split: Sequence[float]) -> tuple[float, float, float]:
    """Three split fractions (train, val, test), each in (0, 1), summing to 1."""
    if len(split) != 3 or any(not 0 < f < 1 for f in split) or abs(sum(split) - 1) > 1e-6:
        raise ConfigError(f"split: expected three fractions train,val,test, each between 0 and 1, summing to 1; "
                          f"got {list(split)}", "split")
    return float(split[0]), float(split[1]), float(split[2])


def random_split(n: int, split: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """A seeded split of ``n`` rows: a permutation from ``rng``; its first ``split[0]`` share is train, then val,
    then test (shares rounded by :func:`largest_remainder`). As the staged UTKFace and AFLW2000-3D files were made."""
    counts = largest_remainder(check_fractions(split), n)
    perm = rng.permutation(n)
    out = np.empty(n, np.uint8)
    out[perm[: counts[0]]] = 0
    out[perm[counts[0] : counts[0] + counts[1]]] = 1
    out[perm[counts[0] + counts[1] :]] = 2
    return out


def check_crop(crop: tuple[int, ...] | None) -> None:
    """A crop box x0,y0,x1,y1 (pixels of the source image) with x0 < x1 and y0 < y1, or ``None``."""
    if crop is not None and (len(crop) != 4 or not (crop[0] < crop[2] and crop[1] < crop[3])):
        raise ConfigError(f"crop: expected x0,y0,x1,y1 with x0 < x1 and y0 < y1, got {list(crop)}", "crop")


def check_size(size: int) -> int:
    """An output side in px, at least the canonical format's smallest."""
    if size < MIN_IMAGE_SIZE:
        raise ConfigError(f"size: expected at least {MIN_IMAGE_SIZE} (px), got {size}", "size")
    return size


def unique_basenames(source: Source, names: Sequence[str]) -> dict[str, str]:
    """Each member's file name to its member path; a file name found twice is an error naming both."""
    found: dict[str, str] = {}
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if base in found:
            raise DatasetError(f"{source.path}: {base!r} is there twice ({found[base]!r} and {name!r}); point "
                               "--src at the folder or archive of one copy")
        found[base] = name
    return found


@dataclass(frozen=True)
class Written:
    """A canonical file as written: where, its content fingerprint, the file's sha256, and its counts."""

    path: Path
    fingerprint: str
    sha256: str
    counts: dict[str, int]
    replaced: str | None  # the fingerprint of the file it replaced, if there was one


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_canonical(arrays: dict[str, np.ndarray], path: Path) -> Written:
    """``arrays`` as a compressed npz at ``path``, atomically: written to a temporary file beside it, read back
    with :func:`~etlbench.data.canonical.load_npz` (every canonical check) and compared by fingerprint, then
    renamed over ``path``. The same arrays in the same order give the same bytes (numpy's fixed zip dates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    before = None
    if path.is_file():
        try:
            before = load_npz(path).fingerprint
        except DatasetError:
            before = "unreadable"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        data = load_npz(tmp, path.stem)
        if data.fingerprint != fingerprint(arrays):
            raise DatasetError(f"{tmp}: reads back with another fingerprint than was written")
        counts = data.split_counts()
        digest = sha256_of(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return Written(path, data.fingerprint, digest, counts, before)
