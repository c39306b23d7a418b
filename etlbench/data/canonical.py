"""The canonical dataset format (docs/design.md): one compressed ``.npz`` with uint8 ``images`` N x H x W x C,
a ``split`` array (0 train, 1 val, 2 test) and label arrays named by task. Validation happens here,
before any training, with errors that name the file and the key."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from etlbench.errors import DatasetError

SPLITS = {"train": 0, "val": 1, "test": 2}


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
        if "split" not in self.arrays:
            return {"images": len(self.images), "pairs": len(self.arrays["pair_fold"]),
                    "folds": len(np.unique(self.arrays["pair_fold"]))}
        split = self.arrays["split"]
        return {s: int((split == v).sum()) for s, v in SPLITS.items()}


def _fail(path: str | Path, message: str) -> DatasetError:
    return DatasetError(f"{path}: {message}")


def validate_arrays(arrays: dict[str, np.ndarray], source: str | Path) -> None:
    """Check ``images`` and ``split``; task labels are checked by the task that reads them."""
    needed = ("images",) if "pair_fold" in arrays else ("images", "split")  # verification sets use folds
    for key in needed:
        if key not in arrays:
            raise _fail(source, f"missing array {key!r} (present: {sorted(arrays)})")
    images = arrays["images"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise _fail(source, f"array 'images' must be uint8 N x H x W x C with C 1 or 3; "
                            f"got dtype {images.dtype} shape {images.shape}")
    if "split" not in arrays:
        return
    split = arrays["split"]
    if split.ndim != 1 or len(split) != len(images):
        raise _fail(source, f"array 'split' must have one entry per image ({len(images)}); got shape {split.shape}")
    bad = ~np.isin(split, list(SPLITS.values()))
    if bad.any():
        raise _fail(source, f"array 'split' holds values other than 0 (train), 1 (val), 2 (test), "
                            f"e.g. {split[bad][0]} at row {int(np.flatnonzero(bad)[0])}")
    for name, value in SPLITS.items():
        if not (split == value).any():
            raise _fail(source, f"the {name} split (split == {value}) is empty")


def load_npz(path: str | Path, name: str | None = None) -> FaceData:
    """Read and validate a canonical ``.npz`` (no pickles are ever loaded)."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "file not found (expected a dataset in the canonical npz format; "
                          "point --data-root or ETLBENCH_DATA at the folder that holds it)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise _fail(path, f"not a readable npz file ({err})") from err
    validate_arrays(arrays, path)
    return FaceData(name or path.stem, arrays, str(path))
