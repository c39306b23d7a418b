"""etlbench: a benchmark of filter-pruning methods for efficient transfer learning on face tasks."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__version__ = "0.1.0"


@functools.cache
def code_version() -> str:
    """The package version and a hash of its source files (``.py`` and ``.yaml``): trial ids include it, so a
    results database never mixes rows of different code, released or not."""
    digest = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml") and p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:10]}"
