"""LFW View 2 verification pairs (Huang, Ramesh, Berg, Learned-Miller, "Labeled Faces in the Wild", UMass TR 07-49,
2007) from an LFW image archive in any of its common variants (``lfw.tgz``, ``lfw-funneled.tgz``,
``lfw-deepfunneled.tgz``, LFW-a (Wolf, Hassner, Taigman, ACCV 2009), a zip or a plain folder: any tree of
``Name/Name_NNNN.jpg``) and the View 2 ``pairs.txt`` (header ``folds pairs``, then per fold ``pairs`` lines
``name n1 n2`` and ``pairs`` lines ``name1 n1 name2 n2``). pairs.txt is read, and every image it names is found,
before any image is decoded."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from etlbench.errors import DatasetError
from etlbench.prepare.archives import Source
from etlbench.prepare.common import (
    Color,
    Converted,
    decode_all,
    log,
    strings,
    unique_basenames,
)

_IMAGE = re.compile(r"^(.+)_(\d{4})\.(jpg|jpeg|png)$", re.IGNORECASE)
PAIRS = "pairs.txt"


def convert(source: Source, *, pairs: str | None = None, crop: tuple[int, ...] = (65, 68, 185, 188), size: int = 64,
            color: Color = "gray") -> Converted:
    """The images that the pairs of ``pairs`` (default: a ``pairs.txt`` in the source, else beside it) name, each
    once, sorted by file name: cropped to the fixed box ``crop`` (x0, y0, x1, y1 on the 250 x 250 image; outside:
    black), resized to ``size`` px with PIL LANCZOS, in ``color`` (gray or rgb). ``identity`` indexes the sorted
    names of the people in the pairs; ``pair_a``/``pair_b`` index the rows; ``pair_fold`` is the fold in file
    order."""
    table, where = _read_pairs(source, pairs)
    files = unique_basenames(source, [n for n in source.names() if _in_person_folder(n)])
    wanted = sorted({name for a, b, _, _ in table for name in (a, b)})
    missing = [n for n in wanted if n not in files]
    if missing:
        raise DatasetError(f"{source.path}: {len(missing)} of the {len(wanted):,} images that {where} names are not "
                           f"there, e.g. {', '.join(missing[:3])} (expected Name/Name_NNNN.jpg)")
    row = {name: i for i, name in enumerate(wanted)}
    people = sorted({_person(n) for n in wanted})
    person = {p: i for i, p in enumerate(people)}
    log(f"{source.path}: decoding the {len(wanted):,} images of {len(table):,} pairs")
    return Converted({
        "images": decode_all(source, [files[n] for n in wanted], size, color, box=lambda i: tuple(crop)),
        "image_name": strings(wanted),
        "identity": np.array([person[_person(n)] for n in wanted], np.int32),
        "identity_names": strings(people),
        "pair_a": np.array([row[a] for a, _, _, _ in table], np.int32),
        "pair_b": np.array([row[b] for _, b, _, _ in table], np.int32),
        "pair_same": np.array([same for _, _, same, _ in table], np.uint8),
        "pair_fold": np.array([fold for _, _, _, fold in table], np.uint8),
    })


def _person(name: str) -> str:
    return _IMAGE.match(name).group(1)


def _in_person_folder(member: str) -> bool:
    """Whether ``member`` is ``.../Name/Name_NNNN.jpg``."""
    parts = member.split("/")
    match = _IMAGE.match(parts[-1])
    return match is not None and len(parts) > 1 and parts[-2] == match.group(1)


def _pairs_text(source: Source, pairs: str | None) -> tuple[str, str]:
    """The text of pairs.txt and how to name it."""
    if pairs is not None:
        with Source(pairs) as given:
            if not given.single_file:
                raise DatasetError(f"{pairs}: expected the file pairs.txt")
            return given.read(given.names()[0]).decode("utf-8", errors="replace"), str(pairs)
    inside = [n for n in source.names() if n.rsplit("/", 1)[-1] == PAIRS]
    if len(inside) == 1:
        return source.read(inside[0]).decode("utf-8", errors="replace"), source.where(inside[0])
    beside = Path(source.path).parent / PAIRS
    if not inside and beside.is_file():
        return _pairs_text(source, str(beside))
    raise DatasetError(f"{source.path}: {'several' if inside else 'no'} {PAIRS} found in or beside it; pass --pairs "
                       "FILE (LFW View 2's pairs.txt)")


def _read_pairs(source: Source, pairs: str | None) -> tuple[list[tuple[str, str, int, int]], str]:
    """(image a, image b, same, fold) per pair, in file order, checked line by line."""
    text, where = _pairs_text(source, pairs)
    lines = text.splitlines()
    try:
        head = [int(v) for v in lines[0].split()]
        folds, n = (head[0], head[1]) if len(head) == 2 else (1, head[0])
    except (IndexError, ValueError):
        raise DatasetError(f"{where}: line 1: expected the header 'folds pairs' (e.g. 10 300)") from None
    body = [(i, line) for i, line in enumerate(lines[1:], 2) if line.strip()]
    if folds < 1 or n < 1 or len(body) != folds * 2 * n:
        raise DatasetError(f"{where}: the header says {folds} folds of {n} same and {n} different pairs "
                           f"({folds * 2 * n} lines) but {len(body)} lines follow")
    table = []
    for k, (number, line) in enumerate(body):
        f = line.split()
        same = k % (2 * n) < n
        names = (f[0], f[1], f[0], f[2]) if same and len(f) == 3 else tuple(f) if not same and len(f) == 4 else ()
        if not names or not all(re.fullmatch(r"\d+", v, re.ASCII) and int(v) > 0 for v in names[1::2]):
            expected = "name n1 n2 (a same-person pair)" if same else "name1 n1 name2 n2 (a different-person pair)"
            raise DatasetError(f"{where}: line {number}: expected {expected}, got {line.strip()!r}")
        a, b = f"{names[0]}_{int(names[1]):04d}.jpg", f"{names[2]}_{int(names[3]):04d}.jpg"
        table.append((a, b, int(same), k // (2 * n)))
    return table, where
