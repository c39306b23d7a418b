"""The source-network interface every backbone implements.

A source network is an ordered ``nn.Sequential`` of named blocks (the *trunk*) followed by the source
task's own head (the *embedding*, e.g. dlib's 128-d face descriptor). The outputs of the blocks are
the cut points that probing (ETL) and truncation use. Inputs are float tensors N x C x H x W already
normalised by :class:`Preprocess`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Preprocess:
    """How a backbone wants its pixels: ``(pixel - mean) / std`` in 0..255 units, RGB, at ``input_size``."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    min_size: int = 32
    channels: int = 3

    def __call__(self, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """uint8 (or float 0..255) N x H x W x C or N x C x H x W -> normalised float N x 3 x H' x W'."""
        x = images
        if x.ndim != 4:
            raise ValueError(f"expected a batch of images with 4 dimensions, got shape {tuple(x.shape)}")
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.permute(0, 3, 1, 2)
        x = x.float()
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        size = size or self.input_size
        if min(size) < self.min_size:
            raise ValueError(f"input size {size} is below this backbone's minimum of {self.min_size} px")
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


@dataclass(frozen=True)
class CutPoint:
    """The output of block ``name`` of the trunk, with ``channels`` channels."""

    name: str
    channels: int


class SourceNetwork(nn.Module):
    """A pretrained source network: named trunk blocks, then the source task's embedding head."""

    def __init__(self, blocks: nn.Sequential, embedding: nn.Module | None, preprocess: Preprocess,
                 name: str = "", description: str = ""):
        super().__init__()
        self.blocks = blocks
        self.embedding = embedding if embedding is not None else nn.Identity()
        self.preprocess = preprocess
        self.name = name
        self.description = description

    def cut_points(self) -> list[CutPoint]:
        """Every block output, in order, with its channel count (measured with a dry run)."""
        names = [n for n, _ in self.blocks.named_children()]
        h, w = self.preprocess.input_size
        was_training = self.training
        self.eval()
        with torch.inference_mode():
            device = next(self.parameters()).device  # where the network is (a GPU while it trains there)
            outs = self.collect(torch.zeros(1, self.preprocess.channels, h, w, device=device), names)
        self.train(was_training)
        return [CutPoint(n, int(outs[n].shape[1])) for n in names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.blocks(x))

    def collect(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """Run the trunk once, keeping the outputs of the named blocks (stops after the last one)."""
        wanted, out = set(names), {}
        for n, block in self.blocks.named_children():
            x = block(x)
            if n in wanted:
                out[n] = x
                if len(out) == len(wanted):
                    break
        missing = wanted - out.keys()
        if missing:
            known = [n for n, _ in self.blocks.named_children()]
            raise KeyError(f"unknown cut point(s) {sorted(missing)}; known: {known}")
        return out

    def trunk(self, cut: str | None = None) -> nn.Sequential:
        """The blocks up to and including ``cut`` (all of them for ``None``); shares the modules."""
        names = [n for n, _ in self.blocks.named_children()]
        if cut is None:
            return self.blocks
        if cut not in names:
            raise KeyError(f"unknown cut point {cut!r}; known: {names}")
        keep = names[: names.index(cut) + 1]
        return nn.Sequential(OrderedDict((n, getattr(self.blocks, n)) for n in keep))


class ChannelPad(nn.Conv2d):
    """Zero-padding of channels at the end, written as a fixed 1x1 convolution so pruning tools can follow it.

    Output channel ``i < in_channels`` copies input channel ``i``; the others are zero. Exactly equal to
    padding before pruning, and still a consistent selection after Torch-Pruning removes channels on
    either side (Torch-Pruning issue #64). Its weights are fixed (not trained) and are not counted as
    learned parameters by :func:`etlbench.measure.count_params`.
    """

    def __init__(self, in_channels: int, out_channels: int):
        if out_channels < in_channels:
            raise ValueError(f"ChannelPad cannot shrink {in_channels} channels to {out_channels}")
        super().__init__(in_channels, out_channels, kernel_size=1, bias=False)
        with torch.no_grad():
            self.weight.zero_()
            self.weight[torch.arange(in_channels), torch.arange(in_channels), 0, 0] = 1.0
        self.weight.requires_grad_(False)
