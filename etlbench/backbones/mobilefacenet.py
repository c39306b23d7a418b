"""MobileFaceNet trained on CASIA-WebFace, from a local checkpoint.

S. Chen, Y. Liu, X. Gao, Z. Han, "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face Verification on
Mobile Devices", CCBR 2018 (arXiv:1804.07573). The layout matches the checkpoint ``mobilefacenet_casia/068.ckpt``
of ``Xiaoccer/MobileFaceNet_Pytorch`` (see that folder's MANIFEST.md): 1,019,136 parameters, 112 x 96 (H x W)
RGB input normalised as (x - 127.5) / 128, 128-d embedding.

Trunk (cut points): ``conv1`` (3x3/2, 64), ``dw_conv1`` (depthwise 3x3, 64), ``block0`` .. ``block14`` (inverted
residual bottlenecks, (t, c, n, s) = (2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)),
``conv2`` (1x1, 512). Embedding: ``linear7`` (global depthwise 7x6 conv + BN), ``linear1`` (1x1 conv to 128 + BN),
flatten.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from etlbench.backbones.base import Preprocess, SourceNetwork
from etlbench.model_io import load_tensors
from etlbench.paths import models_root

CHECKPOINT = Path("mobilefacenet_casia") / "068.ckpt"
NUM_PARAMS = 1_019_136
EMBEDDING_DIM = 128
#: (expansion t, output channels c, repeats n, first stride s) per bottleneck group (Chen et al., Table 1).
BOTTLENECK_SETTING: tuple[tuple[int, int, int, int], ...] = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1),
                                                             (4, 128, 1, 2), (2, 128, 2, 1))
MOBILEFACENET_PREPROCESS = Preprocess(input_size=(112, 96), mean=(127.5, 127.5, 127.5), std=(128.0, 128.0, 128.0))


class ConvBlock(nn.Module):
    """Convolution (no bias), BatchNorm, then PReLU unless ``linear``; ``dw`` makes it depthwise."""

    def __init__(self, inp: int, oup: int, kernel: int | tuple[int, int], stride: int = 1, padding: int = 0,
                 dw: bool = False, linear: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(inp, oup, kernel, stride, padding, groups=inp if dw else 1, bias=False)
        self.bn = nn.BatchNorm2d(oup)
        self.prelu = None if linear else nn.PReLU(oup)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return x if self.prelu is None else self.prelu(x)


class GlobalDepthwiseConv(ConvBlock):
    """``linear7``: the global depthwise convolution (GDConv) over the whole 7x6 final map, then BN.

    A map of another size (input other than 112 x 96) is first average-pooled to 7x6, so the embedding stays
    128-d; at the native size this is the identity.
    """

    def __init__(self, channels: int, kernel: tuple[int, int] = (7, 6)):
        super().__init__(channels, channels, kernel, dw=True, linear=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.conv.kernel_size:
            x = F.adaptive_avg_pool2d(x, self.conv.kernel_size)
        return super().forward(x)


class Bottleneck(nn.Module):
    """Inverted residual (MobileNetV2): 1x1 expand + BN + PReLU, 3x3 depthwise + BN + PReLU, 1x1 project + BN.

    The residual is added when the stride is 1 and the input and output widths are equal.
    """

    def __init__(self, inp: int, oup: int, stride: int, expansion: int):
        super().__init__()
        hidden = inp * expansion
        self.connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.PReLU(hidden),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.PReLU(hidden),
            nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.connect else self.conv(x)


def build_mobilefacenet() -> SourceNetwork:
    """MobileFaceNet with random weights, as a :class:`SourceNetwork` (load weights with :func:`load_checkpoint`)."""
    blocks: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=ConvBlock(3, 64, 3, stride=2, padding=1),
        dw_conv1=ConvBlock(64, 64, 3, stride=1, padding=1, dw=True),
    )
    inp = 64
    for t, c, n, s in BOTTLENECK_SETTING:
        for i in range(n):
            blocks[f"block{len(blocks) - 2}"] = Bottleneck(inp, c, s if i == 0 else 1, t)
            inp = c
    blocks["conv2"] = ConvBlock(inp, 512, 1)
    embedding = nn.Sequential(OrderedDict(
        linear7=GlobalDepthwiseConv(512),
        linear1=ConvBlock(512, EMBEDDING_DIM, 1, linear=True),
        flatten=nn.Flatten(1),
    ))
    return SourceNetwork(nn.Sequential(blocks), embedding, MOBILEFACENET_PREPROCESS, name="mobilefacenet",
                         description="MobileFaceNet, randomly initialised: no weights loaded")


def checkpoint_key_to_ours(key: str) -> str:
    """``blocks.3.conv.0.weight`` -> ``blocks.block3.conv.0.weight``; ``linear7.*`` -> ``embedding.linear7.*``."""
    if key.startswith(("linear7.", "linear1.")):
        return f"embedding.{key}"
    return "blocks." + re.sub(r"^blocks\.(\d+)\.", r"block\1.", key)


def default_checkpoint() -> Path:
    """``<models root>/mobilefacenet_casia/068.ckpt``; a clear error if it is not there."""
    root = models_root()
    how = ("pass weights=<path to 068.ckpt>, or set ETLBENCH_MODELS to the folder that holds "
           f"{CHECKPOINT.as_posix()} (or ETLBENCH_DATA to a data root with a sibling models/ folder)")
    if root is None:
        raise FileNotFoundError(f"MobileFaceNet checkpoint not found: no models root is set; {how}")
    path = root / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"MobileFaceNet checkpoint not found: looked at {path}; {how}")
    return path


def load_checkpoint(net: SourceNetwork, path: str | Path) -> SourceNetwork:
    """Load the ``net_state_dict`` of a MobileFaceNet_Pytorch checkpoint strictly: every key used, every shape equal."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"MobileFaceNet checkpoint {path} does not exist")
    ckpt = load_tensors(path, "MobileFaceNet weights (a dict with 'net_state_dict')")
    if not isinstance(ckpt, dict) or "net_state_dict" not in ckpt:
        keys = list(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise KeyError(f"MobileFaceNet checkpoint {path}: no 'net_state_dict' entry (found {keys})")
    state = {checkpoint_key_to_ours(k): v for k, v in ckpt["net_state_dict"].items()}
    ours = net.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    if missing or unexpected:
        raise KeyError(f"MobileFaceNet checkpoint {path}: missing keys {missing}, unexpected keys {unexpected}")
    for key, value in ours.items():
        if value.shape != state[key].shape:
            raise ValueError(f"MobileFaceNet checkpoint {path}: {key} has shape {tuple(state[key].shape)}, "
                             f"expected {tuple(value.shape)}")
    net.load_state_dict(state, strict=True)
    epoch = ckpt.get("epoch")
    net.description = f"MobileFaceNet trained on CASIA-WebFace, weights from {path}" + (
        f" (epoch {epoch})" if epoch is not None else "")
    return net


def mobilefacenet(weights: str | Path | None = None) -> SourceNetwork:
    """MobileFaceNet (Chen et al., 2018) with CASIA-WebFace weights; ``weights=None`` uses the default checkpoint."""
    return load_checkpoint(build_mobilefacenet(), weights if weights is not None else default_checkpoint())


mobilefacenet.default_weights = default_checkpoint  # what identities fingerprint (backbones.weights_file)
