"""Hostile and malformed input files (issue 14): each is refused with one line naming the file and what was
expected, never with advice to load it unsafely, and before anything large is allocated."""

from __future__ import annotations

import collections
import io
import pickle
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib import format as npy

from etlbench.config import load_spec
from etlbench.data import DatasetError, load_npz
from etlbench.errors import ConfigError, EtlbenchError, SpecError
from etlbench.model_io import load_pruned, load_tensors

N = 30


class PrintOnLoad:
    """Unpickling this calls ``print`` (a harmless stand-in for ``os.system``): nothing may ever print it."""

    def __reduce__(self) -> tuple:
        return print, ("PWNED: a pickle ran code",)


class TensorDict(collections.OrderedDict):
    """A class of our own: a weights-only load must refuse to import it."""


def _assert_clean(err: BaseException, path: Path) -> None:
    message = str(err)
    assert str(path) in message, message
    assert "\n" not in message, message
    assert "allow_pickle" not in message and "weights_only" not in message, message


def _npy(array: np.ndarray, shape: tuple[int, ...] | None = None, body: bytes | None = None) -> bytes:
    """A ``.npy`` file of ``array``, or a hand-made one whose header declares ``shape`` over ``body``."""
    buf = io.BytesIO()
    header = npy.header_data_from_array_1_0(array)
    if shape is not None:
        header["shape"] = shape
    npy.write_array_header_1_0(buf, header)
    buf.write(array.tobytes() if body is None else body)
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _valid(tmp_path: Path, name: str = "d.npz", **arrays: np.ndarray) -> Path:
    base = {"images": np.zeros((N, 16, 16, 3), np.uint8), "split": np.tile(np.array([0, 1, 2], np.uint8), N // 3)}
    path = tmp_path / name
    np.savez_compressed(path, **{**base, **arrays})
    return path


def _refused(path: Path, *expected: str) -> DatasetError:
    with pytest.raises(DatasetError) as err:
        load_npz(path)
    _assert_clean(err.value, path)
    for text in expected:
        assert text in str(err.value), str(err.value)
    return err.value


# --- datasets -----------------------------------------------------------------------------------------------------

def test_empty_text_and_truncated_npz_are_not_archives(tmp_path: Path) -> None:
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    text = tmp_path / "text.npz"
    text.write_text("images,split\n1,2\n")
    truncated = tmp_path / "truncated.npz"
    whole = _valid(tmp_path).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    for path in (empty, text, truncated):
        _refused(path, "not a readable npz file", "a zip of .npy arrays")


def test_member_that_is_not_npy_is_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "extra.npz", {"images.npy": _npy(np.zeros((N, 16, 16, 3), np.uint8)),
                                         "payload.pkl": pickle.dumps(PrintOnLoad())})
    _refused(path, "'payload.pkl' is not a .npy array")


def test_garbage_npy_member_names_the_member(tmp_path: Path) -> None:
    path = _zip(tmp_path / "garbage.npz", {"images.npy": b"\x93NUMPY\x01\x00garbage", "split.npy": b""})
    _refused(path, "member 'images.npy': not a readable .npy array")


def test_huge_declared_shape_is_refused_from_the_header(tmp_path: Path) -> None:
    huge = (1_000_000, 1000, 1000, 3)  # 2.7 TiB declared over a 64-byte body
    path = _zip(tmp_path / "huge.npz", {"images.npy": _npy(np.zeros((1, 1, 1, 3), np.uint8), huge, bytes(64)),
                                        "split.npy": _npy(np.zeros(N, np.uint8))})
    tracemalloc.start()
    start = time.perf_counter()
    try:
        err = _refused(path, "'images.npy' declares", str(huge), "2.7 TiB", "64 B")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - start < 5 and peak < 4 * 2**20, (peak, err)


def test_zip_bomb_is_refused_from_the_zip_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _valid(tmp_path, "bomb.npz", images=np.zeros((1300, 64, 64, 3), np.uint8),
                  split=np.tile(np.array([0, 1], np.uint8), 650))  # 16 MB of zeros in a few KB
    assert path.stat().st_size < 100_000
    monkeypatch.setenv("ETLBENCH_MAX_DATA_BYTES", str(2**20))  # stands for the 4 GiB default
    tracemalloc.start()
    try:
        _refused(path, "would unpack to 15.2 MiB", "over the limit of 1.0 MiB", "ETLBENCH_MAX_DATA_BYTES")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 2**20, peak
    monkeypatch.setenv("ETLBENCH_MAX_DATA_BYTES", "lots")
    with pytest.raises(ConfigError, match="ETLBENCH_MAX_DATA_BYTES: expected a positive whole number"):
        load_npz(path)


def test_object_arrays_are_refused_and_never_unpickled(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _valid(tmp_path, "objects.npz", meta=np.array([PrintOnLoad(), {"a": 1}], dtype=object))
    _refused(path, "'meta.npy' holds Python objects")
    assert "PWNED" not in capsys.readouterr().out


@pytest.mark.parametrize(("arrays", "expected"), [
    ({"split": np.zeros((N, 2), np.uint8)}, "'split' must have one entry per image (30)"),
    ({"split": np.zeros(N, np.float32)}, "'split' must have one entry per image (30), integers"),
    ({"images": np.zeros((N, 2, 2, 3), np.uint8)}, "holds 2x2 images; the smallest allowed is 16x16"),
    ({"images": np.zeros((N, 16, 15, 1), np.uint8)}, "holds 16x15 images"),
])
def test_structure_is_refused_before_any_array_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       arrays: dict[str, np.ndarray], expected: str) -> None:
    path = _valid(tmp_path, **arrays)

    def no_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("an array was unpacked before the structure was checked")

    monkeypatch.setattr(npy, "read_array", no_read)
    _refused(path, expected)


# --- weights ------------------------------------------------------------------------------------------------------

def _pickle_of_code(path: Path) -> None:
    path.write_bytes(pickle.dumps(PrintOnLoad()))


def _torch_of_own_class(path: Path) -> None:
    torch.save(TensorDict(w=torch.zeros(2)), path)


def _truncated(path: Path) -> None:
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:1500])


def _text(path: Path) -> None:
    path.write_text("this is not a checkpoint\n")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("write", [_pickle_of_code, _torch_of_own_class, _truncated, _text, _empty])
def test_weights_that_are_not_tensors_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  write: Callable[[Path], None]) -> None:
    path = tmp_path / "w.pt"
    write(path)
    with pytest.raises(ConfigError, match="not a weights-only torch checkpoint of a test state dict") as err:
        load_tensors(path, "a test state dict")
    _assert_clean(err.value, path)
    assert "PWNED" not in capsys.readouterr().out


def test_own_class_is_named(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    _torch_of_own_class(path)
    with pytest.raises(ConfigError, match=r"holds objects other than tensors: Unsupported global: .*TensorDict"):
        load_tensors(path, "a test state dict")


def test_every_call_site_refuses_a_pickle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from etlbench.backbones.mobilefacenet import build_mobilefacenet, load_checkpoint
    from etlbench.backbones.timm_backbone import _load_state_dict
    from etlbench.backbones.vggface import read_vgg_face_dag

    path = tmp_path / "evil.ckpt"
    _pickle_of_code(path)
    for load, what in [(lambda: load_checkpoint(build_mobilefacenet(), path), "MobileFaceNet weights"),
                       (lambda: read_vgg_face_dag(path), "VGG-Face"),
                       (lambda: _load_state_dict(path), "timm state dict"),
                       (lambda: load_pruned(torch.nn.Linear(1, 1), str(path)), "pruned model")]:
        with pytest.raises(ConfigError, match=what) as err:
            load()
        _assert_clean(err.value, path)
    assert "PWNED" not in capsys.readouterr().out


def test_spec_reports_a_pickle_as_one_line(tmp_path: Path, no_data_root: None, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("ETLBENCH_MODELS", str(tmp_path))
    _pickle_of_code(tmp_path / "evil.ckpt")
    with pytest.raises(SpecError, match=r"backbone_weights: 'mobilefacenet' cannot be built from .*evil\.ckpt: "
                                        r".*not a weights-only torch checkpoint") as err:
        load_spec("smoke", backbone="mobilefacenet", backbone_weights="evil.ckpt")
    assert isinstance(err.value, EtlbenchError)
    _assert_clean(err.value, tmp_path / "evil.ckpt")
    assert "PWNED" not in capsys.readouterr().out


def test_a_compressed_checkpoint_is_refused_before_torch_unpacks_it(tmp_path: Path) -> None:
    """torch stores records as they are; a deflated 50 MB record in a 50 KB file would be allocated by torch.load."""
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(10)}, good)
    assert torch.equal(load_tensors(good, "a test state dict")["w"], torch.zeros(10))
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            out.writestr(info.filename, b"\0" * 50_000_000 if info.filename.endswith("/0") else z.read(info))
    tracemalloc.start()
    with pytest.raises(ConfigError, match=r"bomb\.pt: not a torch checkpoint of a test state dict: its records are "
                                          r"compressed to unpack to 50,000,\d+ bytes from a file of"):
        load_tensors(bomb, "a test state dict")
    assert tracemalloc.get_traced_memory()[1] < 4 * 2**20
    tracemalloc.stop()
