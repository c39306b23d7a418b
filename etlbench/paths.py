"""Where data and model files are looked for: ``--data-root`` / ``ETLBENCH_DATA`` and ``ETLBENCH_MODELS``."""

from __future__ import annotations

import os
from pathlib import Path


def data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data root: the explicit argument, else ``$ETLBENCH_DATA``, else ``None`` (synthetic data only)."""
    value = explicit if explicit is not None else os.environ.get("ETLBENCH_DATA")
    return Path(value).expanduser() if value else None


def models_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """Local model files: the argument, else ``$ETLBENCH_MODELS``, else ``<data root>/../models`` if it exists."""
    value = explicit if explicit is not None else os.environ.get("ETLBENCH_MODELS")
    if value:
        return Path(value).expanduser()
    root = data_root()
    if root is not None and (root.parent / "models").is_dir():
        return root.parent / "models"
    return None
