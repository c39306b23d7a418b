"""Source networks: each module registers its backbones in :data:`etlbench.registry.BACKBONES`."""

from __future__ import annotations

from typing import Any

from etlbench.backbones import dlib_resnet, mobilefacenet, timm_backbone, vggface  # noqa: F401  (register)
from etlbench.backbones.base import ChannelPad, CutPoint, Preprocess, SourceNetwork
from etlbench.registry import BACKBONES

DEFAULT_BACKBONE = "dlib-resnet29"


def create_backbone(name: str = DEFAULT_BACKBONE, **kwargs: Any) -> SourceNetwork:
    """Build a registered source network by name (``Unknown backbones`` error lists close matches)."""
    return BACKBONES.get(name)(**kwargs)


__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "ChannelPad", "CutPoint", "Preprocess", "SourceNetwork", "create_backbone"]
