"""The canonical dataset format (docs/design.md): one compressed ``.npz`` with uint8 ``images`` N x H x W x C,
a ``split`` array (0 train, 1 val, 2 test; training needs it, a set that is only tested on may go without) and
label arrays named by task. Validation happens here, before any training, with errors that name the file and the
key."""

from __future__ import annotations

import hashlib
import io
import math
import os
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from etlbench.errors import ConfigError, DatasetError

SPLITS = {"train": 0, "val": 1, "test": 2}
MIN_IMAGE_SIZE = 16  # px on each side; smaller images are refused, not silently upscaled (configs refuse it too)
MAX_DATA_BYTES = 4 * 2**30  # the most a dataset may unpack to; the environment variable below overrides it
MAX_DATA_BYTES_ENV = "ETLBENCH_MAX_DATA_BYTES"
_HEADER_BYTES = 2**16 + 16  # enough for any .npy header numpy writes (magic, length, dict of at most 64 KiB)
_READ_ERRORS = (zipfile.BadZipFile, EOFError, OSError, ValueError, TypeError, KeyError, RuntimeError,
                NotImplementedError, zlib.error)  # what zipfile and numpy raise on a damaged archive


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """A short hash of a dataset's content (every array's name, dtype, shape and bytes): result rows and ids name
    their data by it and by the dataset's name (a file's name, never the folder it lies in)."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}\0{a.dtype.str}\0{a.shape}\0".encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()[:16]


@dataclass
class FaceData:
    """The arrays of one dataset, validated; ``synthetic`` marks procedurally generated faces; ``fingerprint`` is
    the content hash of the arrays (:func:`fingerprint`), kept when the arrays are dropped for shipping."""

    name: str
    arrays: dict[str, np.ndarray]
    source: str
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint and self.arrays:
            self.fingerprint = fingerprint(self.arrays)

    @property
    def images(self) -> np.ndarray:
        return self.arrays["images"]

    def split_counts(self) -> dict[str, int]:
        return _counts(len(self.images), self.arrays, self.source)


def _fail(path: str | Path, message: str) -> DatasetError:
    return DatasetError(f"{path}: {message}")


def validate_arrays(arrays: dict[str, np.ndarray], source: str | Path) -> None:
    """Check ``images`` and ``split`` (their structure, then the split's values); task labels are checked by the task
    that reads them."""
    check_structure({k: (a.shape, a.dtype) for k, a in arrays.items()}, source)
    if "split" in arrays:
        check_split(arrays["split"], source)


def check_split(split: np.ndarray, source: str | Path) -> None:
    """Every entry of ``split`` is 0 (train), 1 (val) or 2 (test), and no split is empty."""
    bad = ~np.isin(split, list(SPLITS.values()))
    if bad.any():
        raise _fail(source, f"array 'split' holds values other than 0 (train), 1 (val), 2 (test), "
                            f"e.g. {split[bad][0]} at row {int(np.flatnonzero(bad)[0])}")
    for name, value in SPLITS.items():
        if not (split == value).any():
            raise _fail(source, f"the {name} split (split == {value}) is empty")


def _counts(n_images: int, arrays: dict[str, np.ndarray], source: str | Path) -> dict[str, int]:
    """Images per split, or the images, pairs and folds of a verification set, or the images of a set without
    splits (a test set for cross-dataset evaluation)."""
    if "pair_fold" in arrays:
        return {"images": n_images, "pairs": len(arrays["pair_fold"]), "folds": len(np.unique(arrays["pair_fold"]))}
    if "split" not in arrays:
        return {"images": n_images}
    check_split(arrays["split"], source)
    return {s: int((arrays["split"] == v).sum()) for s, v in SPLITS.items()}


def max_data_bytes() -> int:
    """The bound on a dataset's unpacked size: :data:`MAX_DATA_BYTES`, or ``ETLBENCH_MAX_DATA_BYTES`` if set."""
    raw = os.environ.get(MAX_DATA_BYTES_ENV, "").strip()
    if not raw:
        return MAX_DATA_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{MAX_DATA_BYTES_ENV}: expected a positive whole number of bytes, got {raw!r}",
                          MAX_DATA_BYTES_ENV)
    return value


def _size(n: int) -> str:
    """``n`` bytes, readable (``2.7 TiB``)."""
    exp = min(4, max(0, (n.bit_length() - 1) // 10))
    return f"{n} B" if exp == 0 else f"{n / 1024**exp:.1f} {('KiB', 'MiB', 'GiB', 'TiB')[exp - 1]}"


def _reason(err: BaseException) -> str:
    """The first line of an error, short, and never numpy's advice to unpickle."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0][:200].rstrip(".")
    return "it would need unpickling, which is never done" if "pickle" in text else text


def _read_header(path: Path, npz: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one ``.npy`` member from its first bytes only (no array is read); refuses object
    dtypes and a declared size that is not the member's size in the zip directory."""
    with npz.open(info) as member:
        head = io.BytesIO(member.read(min(info.file_size, _HEADER_BYTES)))
    version = npy.read_magic(head)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]} (expected 1.0 or 2.0)")
    read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
    shape, _fortran_order, dtype = read(head)
    name = info.filename
    if dtype.hasobject:
        raise _fail(path, f"member {name!r} holds Python objects (dtype {dtype}), which would need unpickling; "
                          f"expected numeric or string arrays")
    if min(shape, default=0) < 0:
        raise _fail(path, f"member {name!r} declares the invalid shape {shape}")
    declared, held = math.prod(shape) * dtype.itemsize, info.file_size - head.tell()
    if declared != held:
        raise _fail(path, f"member {name!r} declares a {dtype} array of shape {shape} ({_size(declared)}) "
                          f"but holds {_size(held)} of data")
    return shape, dtype


def check_structure(headers: dict[str, tuple[tuple[int, ...], np.dtype]], path: str | Path) -> None:
    """The structure of ``images`` and ``split`` from their shapes and dtypes alone (an npz's headers: before any
    array is unpacked)."""
    if "images" not in headers:  # training needs 'split' too (task_data says so); a test set may go without
        raise _fail(path, f"missing array 'images' (present: {sorted(headers)})")
    shape, dtype = headers["images"]
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] not in (1, 3):
        raise _fail(path, f"array 'images' must be uint8 N x H x W x C with C 1 or 3; got dtype {dtype} shape {shape}")
    if min(shape[1:3]) < MIN_IMAGE_SIZE:
        raise _fail(path, f"array 'images' holds {shape[1]}x{shape[2]} images; the smallest allowed is "
                          f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} px")
    if "split" in headers:
        split_shape, split_dtype = headers["split"]
        if split_dtype.kind not in "iu" or split_shape != shape[:1]:
            raise _fail(path, f"array 'split' must have one entry per image ({shape[0]}), integers; "
                              f"got dtype {split_dtype} shape {split_shape}")


def load_npz(path: str | Path, name: str | None = None) -> FaceData:
    """Read and validate a canonical ``.npz``, defensively: no pickle is ever loaded, and the zip directory and
    each ``.npy`` header are checked before any array is unpacked (object dtypes, sizes that do not match the
    member, a structure that is not the canonical one). The arrays may unpack to at most :data:`MAX_DATA_BYTES`
    (4 GiB) in all; set the environment variable ``ETLBENCH_MAX_DATA_BYTES`` to change the bound."""
    path = Path(path)
    arrays = _read_npz(path)[1]
    validate_arrays(arrays, path)
    return FaceData(name or path.stem, arrays, str(path))


def split_counts(path: str | Path) -> dict[str, int]:
    """What a dataset file holds per split (or its images, pairs and folds), checked like :func:`load_npz` but
    unpacking only the split (or pair-fold) array: what ``etlbench list datasets`` shows, quickly."""
    path = Path(path)
    headers, arrays = _read_npz(path, only=("split", "pair_fold"))
    return _counts(headers["images"][0][0], arrays, path)


def _read_npz(path: Path, only: tuple[str, ...] | None = None
              ) -> tuple[dict[str, tuple[tuple[int, ...], np.dtype]], dict[str, np.ndarray]]:
    """The headers of every array of ``path`` (checked) and the arrays themselves (``only``: just those named)."""
    if not path.is_file():
        raise _fail(path, "file not found (expected a dataset in the canonical npz format; "
                          "point --data-root or ETLBENCH_DATA at the folder that holds it)")
    limit = max_data_bytes()
    member = ""
    try:
        with zipfile.ZipFile(path) as npz:
            infos = npz.infolist()
            counts = Counter(i.filename for i in infos)
            odd = [n for n, c in counts.items() if c > 1 or not n.endswith(".npy")]
            if odd:
                raise _fail(path, f"member {odd[0]!r} is not a .npy array or appears twice "
                                  f"(expected one .npy file per array)")
            total = sum(i.file_size for i in infos)
            if total > limit:
                raise _fail(path, f"the arrays would unpack to {_size(total)}, over the limit of {_size(limit)} "
                                  f"(set {MAX_DATA_BYTES_ENV} to raise it)")
            headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
            for info in infos:
                member = info.filename
                headers[member[:-4]] = _read_header(path, npz, info)
            member = ""
            check_structure(headers, path)
            arrays: dict[str, np.ndarray] = {}
            for info in infos:
                member = info.filename
                if only is None or member[:-4] in only:
                    with npz.open(info) as stream:
                        arrays[member[:-4]] = npy.read_array(stream, allow_pickle=False)
    except DatasetError:
        raise
    except _READ_ERRORS as err:
        where = (f"member {member!r}: not a readable .npy array" if member else
                 "not a readable npz file: expected an npz archive, a zip of .npy arrays")
        raise _fail(path, f"{where} ({_reason(err)})") from err
    return headers, arrays
