"""Source networks: each module registers its backbones in :data:`etlbench.registry.BACKBONES`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from etlbench.backbones import dlib_resnet, mobilefacenet, timm_backbone, vggface  # noqa: F401  (register)
from etlbench.backbones.base import ChannelPad, CutPoint, Preprocess, SourceNetwork
from etlbench.paths import models_root
from etlbench.registry import BACKBONES

DEFAULT_BACKBONE = "dlib-resnet29"


def weights_path(weights: str | Path) -> Path:
    """A weights file: as given if absolute, else under the models root (``$ETLBENCH_MODELS``) where one is set."""
    path, root = Path(weights).expanduser(), models_root()
    return path if path.is_absolute() or root is None else root / path


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str | Path | None = None, **kwargs: Any) -> SourceNetwork:
    """Build a registered source network by name (``Unknown backbones`` error lists close matches); ``weights``
    is a local file (see :func:`weights_path`), ``None`` the backbone's own default."""
    if weights is not None:
        kwargs["weights"] = weights_path(weights)
    return BACKBONES.get(name)(**kwargs)


__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "ChannelPad", "CutPoint", "Preprocess", "SourceNetwork", "create_backbone",
           "weights_path"]
