"""Source networks, in :data:`etlbench.registry.BACKBONES` (the built-ins are declared in :mod:`etlbench.plugins`
and each module is imported on first use)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from etlbench.backbones.base import ChannelPad, CutPoint, Preprocess, SourceNetwork
from etlbench.errors import ConfigError
from etlbench.paths import models_root
from etlbench.registry import BACKBONES

DEFAULT_BACKBONE = "dlib-resnet29"


def weights_path(weights: str | Path) -> Path:
    """A weights file: as given if absolute, else under the models root (``$ETLBENCH_MODELS``) where one is set."""
    path, root = Path(weights).expanduser(), models_root()
    return path if path.is_absolute() or root is None else root / path


def weights_file(name: str, weights: str | Path | None = None) -> Path | None:
    """The file a backbone's weights are read from: ``weights`` (see :func:`weights_path`), else the backbone's
    own default (its factory's ``default_weights``), else ``None`` (random weights)."""
    if weights is not None:
        return weights_path(weights)
    default = getattr(BACKBONES.get(name), "default_weights", None)
    return default() if default is not None else None


@functools.cache
def _file_hash(path: Path, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def weights_fingerprint(name: str, weights: str | Path | None = None) -> str:
    """A short hash of the backbone's weights file (``random`` where it has none): identities name the source
    network's weights by their content, never by where they lie."""
    path = weights_file(name, weights)
    if path is None:
        return "random"
    stat = path.stat()
    return _file_hash(path.resolve(), stat.st_size, stat.st_mtime)


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str | Path | None = None, **kwargs: Any) -> SourceNetwork:
    """Build a registered source network by name (``Unknown backbones`` error lists close matches); ``weights``
    is a local file (see :func:`weights_path`), ``None`` the backbone's own default."""
    if weights is not None:
        kwargs["weights"] = weights_path(weights)
    return BACKBONES.get(name)(**kwargs)


def check_backbone(name: str, weights: str | Path | None = None) -> SourceNetwork:
    """The backbone, built now so that weights that are missing or not the backbone's format fail before any data
    is read: any failure is a one-line :class:`ConfigError` naming the backbone and the weights file (its ``key``:
    ``backbone_weights``, or ``backbone`` without a file)."""
    try:
        return create_backbone(name, weights)
    except Exception as err:  # a missing file, or one that is not the backbone's format: report, do not crash
        path = weights_path(weights) if weights is not None else None
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].removeprefix(f"{path}: ")
        where = f" from {path}" if path is not None else ""
        raise ConfigError(f"{name!r} cannot be built{where}: {reason}",
                          key="backbone" if path is None else "backbone_weights") from err


__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "ChannelPad", "CutPoint", "Preprocess", "SourceNetwork", "check_backbone",
           "create_backbone", "weights_file", "weights_fingerprint", "weights_path"]
