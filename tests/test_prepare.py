"""``etlbench data prepare`` and ``data verify``: each dataset's usual distribution (small fixtures written here, in
each official format) becomes its canonical npz; hostile or damaged archives are refused naming the archive and
the member; the staged real files verify (where ``ETLBENCH_DATA`` is set)."""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from etlbench.cli import main
from etlbench.data import load_npz
from etlbench.errors import ConfigError, DatasetError
from etlbench.prepare import prepare
from etlbench.prepare.archives import Source
from etlbench.prepare.common import largest_remainder, write_canonical

RNG = np.random.default_rng(0)


def _image(size: tuple[int, int] = (40, 40), gray: bool = False, fmt: str = "JPEG") -> bytes:
    shape = (size[1], size[0]) if gray else (size[1], size[0], 3)
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


# --- FER2013 --------------------------------------------------------------------------------------------------------

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _fer_csv(path: Path, header: str = "emotion,pixels,Usage", bad_row: str | None = None) -> np.ndarray:
    pixels = RNG.integers(0, 256, (28, 48 * 48))
    usage = ["Training"] * 14 + ["PublicTest"] * 7 + ["PrivateTest"] * 7
    lines = [header] + [f"{i % 7},{' '.join(map(str, p))},{u}" for i, (p, u) in enumerate(zip(pixels, usage,
                                                                                               strict=True))]
    if bad_row is not None:
        lines.insert(5, bad_row)
    path.write_text("\n".join(lines) + "\n")
    return pixels


def test_fer2013_csv(tmp_path: Path) -> None:
    pixels = _fer_csv(tmp_path / "fer2013.csv")
    done = prepare("fer2013", tmp_path / "fer2013.csv", tmp_path / "root", {"subsample": 7, "seed": 3})
    data = load_npz(tmp_path / "root" / "fer2013" / "fer2013_48.npz")
    assert done.counts == {"train": 7, "val": 7, "test": 7} and done.fingerprint == data.fingerprint
    a = data.arrays
    assert a["images"].shape == (21, 48, 48, 1) and list(a["class_names"]) == list(CLASSES)
    train = a["split"] == 0
    assert sorted(a["label"][train]) == list(range(7))  # stratified: one image of each class
    row = int(str(a["source_file"][-1]).rsplit("row", 1)[1]) - 1  # the csv's data row of the last image
    np.testing.assert_array_equal(a["images"][-1, :, :, 0].ravel(), pixels[row])  # native 48 px: pixels as given
    again = prepare("fer2013", tmp_path / "fer2013.csv", tmp_path / "again", {"subsample": 7, "seed": 3})
    assert again.sha256 == done.sha256  # the same input and parameters: the same bytes


def test_fer2013_icml_header_and_bad_rows(tmp_path: Path) -> None:
    _fer_csv(tmp_path / "icml_face_data.csv", header="emotion, pixels, Usage")  # spaces, as in icml_face_data.csv
    assert prepare("fer2013", tmp_path, tmp_path / "root").counts == {"train": 14, "val": 7, "test": 7}
    for bad, message in (("9,1 2 3,Training", "line 6: emotion 9 is not a class 0..6"),
                         ("1,1 2 3,Training", "line 6: expected 2304 pixel values"),
                         ("1," + " ".join(["7"] * 2304) + ",Elsewhere", "line 6: Usage 'Elsewhere'")):
        _fer_csv(tmp_path / "fer2013.csv", bad_row=bad)
        with pytest.raises(DatasetError, match=re.escape(message)) as err:
            prepare("fer2013", tmp_path / "fer2013.csv", tmp_path / "bad")
        assert "fer2013.csv" in str(err.value)


def test_fer2013_image_folders_in_a_zip(tmp_path: Path) -> None:
    files = {f"train/{c}/Training_{i}{k}.jpg": _image((48, 48), gray=True) for i, c in enumerate(CLASSES)
             for k in range(3)}
    files |= {f"test/{c}/PublicTest_{i}.jpg": _image((48, 48), gray=True) for i, c in enumerate(CLASSES)}
    files |= {f"test/{c}/PrivateTest_{i}.jpg": _image((48, 48), gray=True) for i, c in enumerate(CLASSES)}
    files["train/angry/Training_99.jpg3.jpg"] = _image((48, 48), gray=True)  # an augmented copy: skipped, listed
    files["train/README.txt"] = b"not an image"
    done = prepare("fer2013", _zip(tmp_path / "fer.zip", files), tmp_path / "root", {"subsample": 14})
    assert done.counts == {"train": 14, "val": 7, "test": 7}
    assert done.skipped == ["train/angry/Training_99.jpg3.jpg (the name is not Training_N, PublicTest_N or "
                            "PrivateTest_N)"]
    a = load_npz(done.path).arrays
    assert np.bincount(a["label"][a["split"] == 0]).tolist() == [2] * 7
    assert list(a["source_file"]) == sorted(a["source_file"][a["split"] == 0]) + sorted(
        a["source_file"][a["split"] == 1]) + sorted(a["source_file"][a["split"] == 2])


def test_largest_remainder_gives_the_staged_fer2013_counts() -> None:
    totals = [3995, 436, 4097, 7215, 4830, 3171, 4965]  # FER2013's Training images per class
    assert largest_remainder(totals, 8000) == [1113, 121, 1142, 2010, 1346, 884, 1384]


# --- UTKFace --------------------------------------------------------------------------------------------------------

MALFORMED = ["24_0_1_20170116220224657 .jpg.chip.jpg", "39_1_20170116174525125.jpg.chip.jpg",
             "55_0_0_20170116232725357jpg.chip.jpg", "200_0_0_20170116232725357.jpg.chip.jpg"]


def test_utkface_archive_lists_what_it_skips(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    names = [f"{20 + i}_{i % 2}_{i % 5}_2017010{i}.jpg.chip.jpg" for i in range(12)]
    archive = _tar(tmp_path / "UTKFace.tar.gz", {f"UTKFace/{n}": _image() for n in names + MALFORMED})
    argv = ["data", "prepare", "utkface", "--src", str(archive), "--dst", str(tmp_path / "root"),
            "--subsample", "10", "--size", "32"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "skipped 4:" in out and all(f"UTKFace/{n} (" in out for n in MALFORMED)
    a = load_npz(tmp_path / "root" / "utkface" / "utkface_64.npz").arrays
    assert a["images"].shape == (10, 32, 32, 3) and np.bincount(a["split"]).tolist() == [7, 1, 2]
    chosen = list(a["source_file"])
    assert chosen == sorted(chosen) and set(chosen) <= set(names)
    parsed = [(int(n.split("_")[0]), int(n.split("_")[1]), int(n.split("_")[2])) for n in chosen]
    assert [tuple(v) for v in np.stack([a["age"], a["gender"], a["race"]], 1).tolist()] == parsed


# --- AFLW2000-3D ----------------------------------------------------------------------------------------------------

def _aflw(folder: Path, n: int = 10) -> dict[str, dict]:
    mats = {}
    for i in range(n):
        stem = f"image{i * 2:05d}"
        points = np.stack([RNG.uniform(20, 80, 68), RNG.uniform(25, 85, 68), RNG.uniform(0, 9, 68)]).astype(np.float32)
        pose_para = np.array([[0.1 * i, -0.2, 0.05, 200, 210, -90, 0.0015]], np.float32)
        if i == 3:
            pose_para[0, 1] = 2.0  # yaw of 114.6 degrees: outside the +-99 subset
        mats[stem] = {"Pose_Para": pose_para, "pt3d_68": points, "pt2d": points[:2, :21]}
        scipy.io.savemat(folder / f"{stem}.mat", mats[stem])
        (folder / f"{stem}.jpg").write_bytes(_image((100, 100)))
    return mats


def test_aflw2000_crop_pose_and_landmarks(tmp_path: Path) -> None:
    folder = tmp_path / "AFLW2000"
    folder.mkdir()
    mats = _aflw(folder)
    done = prepare("aflw2000", folder, tmp_path / "root")
    a = load_npz(done.path).arrays
    assert done.counts == {"train": 7, "val": 1, "test": 2} and list(a["pose_names"]) == ["yaw", "pitch", "roll"]
    m = mats["image00000"]
    x, y = m["pt3d_68"][0], m["pt3d_68"][1]
    w, h = x.max() - x.min(), y.max() - y.min()
    cx, cy, side = (x.min() + x.max()) / 2, (y.min() + y.max()) / 2 - 0.1 * h, 1.35 * max(w, h)
    np.testing.assert_allclose(a["crop_box"][0], [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2],
                               rtol=1e-5)
    np.testing.assert_allclose(a["pose"][3], np.degrees([2.0, 0.3, 0.05]), rtol=1e-5)  # (yaw, pitch, roll)
    assert a["pose_valid99"].tolist() == [i != 3 for i in range(10)]
    box = np.round(a["crop_box"][0])
    np.testing.assert_allclose(a["landmarks68"][0], (np.stack([x, y], 1) - a["crop_box"][0][:2]) * 64 /
                               (box[2] - box[0]), rtol=1e-5)
    expected = Image.open(folder / "image00000.jpg").convert("RGB").crop(tuple(int(v) for v in box))
    np.testing.assert_array_equal(a["images"][0], np.asarray(expected.resize((64, 64), Image.LANCZOS)))


def test_aflw2000_missing_labels_fail_before_decoding(tmp_path: Path) -> None:
    folder = tmp_path / "AFLW2000"
    folder.mkdir()
    _aflw(folder, 3)
    (folder / "image00002.jpg").write_bytes(b"not a jpeg")  # never decoded: the labels fail first
    (folder / "image00004.mat").unlink()
    with pytest.raises(DatasetError, match=r"member 'image00004.jpg': has no image00004.mat beside it"):
        prepare("aflw2000", folder, tmp_path / "root")
    scipy.io.savemat(folder / "image00004.mat", {"Pose_Para": np.zeros((1, 7), np.float32)})
    with pytest.raises(DatasetError, match=r"member 'image00004.mat': no 'pt3d_68'"):
        prepare("aflw2000", folder, tmp_path / "root")


# --- LFW pairs ------------------------------------------------------------------------------------------------------

PEOPLE = {"Ann_Lee": 3, "Bo_Yang": 2, "Cy_Two": 1, "Di_Ng": 1, "Ed_Unused": 1}
PAIRS = """2\t2
Ann_Lee\t1\t2
Bo_Yang\t1\t2
Ann_Lee\t1\tCy_Two\t1
Bo_Yang\t1\tDi_Ng\t1
Ann_Lee\t2\t3
Ann_Lee\t1\t3
Cy_Two\t1\tDi_Ng\t1
Ann_Lee\t3\tBo_Yang\t2
"""


def _lfw(prefix: str = "lfw/") -> dict[str, bytes]:
    return {f"{prefix}{p}/{p}_{k:04d}.jpg": _image((250, 250)) for p, n in PEOPLE.items() for k in range(1, n + 1)}


def test_lfw_tgz_with_pairs_beside_it(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "lfw.tgz", _lfw())
    (tmp_path / "pairs.txt").write_text(PAIRS)
    done = prepare("lfw_pairs", archive, tmp_path / "root")
    a = load_npz(done.path).arrays
    assert done.counts == {"images": 7, "pairs": 8, "folds": 2}
    assert list(a["identity_names"]) == ["Ann_Lee", "Bo_Yang", "Cy_Two", "Di_Ng"]  # only the people in pairs
    names = list(a["image_name"])
    assert names == sorted(names) and "Ed_Unused_0001.jpg" not in names
    assert (names[a["pair_a"][2]], names[a["pair_b"][2]]) == ("Ann_Lee_0001.jpg", "Cy_Two_0001.jpg")
    assert a["pair_same"].tolist() == [1, 1, 0, 0] * 2 and a["pair_fold"].tolist() == [0] * 4 + [1] * 4
    assert a["images"].shape == (7, 64, 64, 1)
    rgb = prepare("lfw_pairs", archive, tmp_path / "rgb", {"color": "rgb", "crop": (0, 0, 250, 250), "size": 32})
    assert load_npz(rgb.path).images.shape == (7, 32, 32, 3)


def test_lfw_deepfunneled_folder_with_pairs_given(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", _lfw("lfw-deepfunneled/"))
    (tmp_path / "p.txt").write_text(PAIRS)
    done = prepare("lfw_pairs", root, tmp_path / "root", {"pairs": str(tmp_path / "p.txt")})
    assert done.counts["pairs"] == 8


def test_lfw_missing_image_and_bad_pairs_fail_before_decoding(tmp_path: Path) -> None:
    files = _lfw()
    del files["lfw/Di_Ng/Di_Ng_0001.jpg"]
    files["lfw/Ann_Lee/Ann_Lee_0001.jpg"] = b"broken"  # never decoded: the missing image fails first
    root = _tree(tmp_path / "src", files)
    (tmp_path / "src" / "pairs.txt").write_text(PAIRS)
    with pytest.raises(DatasetError, match=r"1 of the 7 images that .*pairs.txt.* names are not there, e.g. "
                                           r"Di_Ng_0001.jpg"):
        prepare("lfw_pairs", root, tmp_path / "root")
    (tmp_path / "src" / "pairs.txt").write_text(PAIRS.replace("Bo_Yang\t1\tDi_Ng\t1", "Bo_Yang\t1\tDi_Ng"))
    with pytest.raises(DatasetError, match=r"pairs.txt': line 5: expected name1 n1 name2 n2"):
        prepare("lfw_pairs", root, tmp_path / "root")
    (tmp_path / "src" / "pairs.txt").write_text("10\t300\n" + PAIRS.split("\n", 1)[1])
    with pytest.raises(DatasetError, match="the header says 10 folds of 300"):
        prepare("lfw_pairs", root, tmp_path / "root")


def test_undecodable_image_names_the_member(tmp_path: Path) -> None:
    files = _lfw()
    files["lfw/Cy_Two/Cy_Two_0001.jpg"] = _image((250, 250))[:300]  # a truncated jpeg
    archive = _tar(tmp_path / "lfw.tgz", files)
    (tmp_path / "pairs.txt").write_text(PAIRS)
    with pytest.raises(DatasetError, match=r"lfw.tgz: member 'lfw/Cy_Two/Cy_Two_0001.jpg': not a decodable image"):
        prepare("lfw_pairs", archive, tmp_path / "root")


# --- your own labelled data -----------------------------------------------------------------------------------------

def test_own_folder_with_split_folders(tmp_path: Path) -> None:
    files = {f"{s}/{c}/{c}{i}.png": _image((30, 20), fmt="PNG") for s, n in (("train", 3), ("val", 1), ("test", 2))
             for c in ("cat", "dog") for i in range(n)}
    archive = _zip(tmp_path / "mine.zip", {f"mine/{k}": v for k, v in files.items()})
    done = prepare("folder", archive, tmp_path / "root", {"size": 24, "classes": ("dog", "cat")}, output_name="pets")
    assert done.path == str(tmp_path / "root" / "pets" / "pets_24.npz")
    a = load_npz(done.path).arrays
    assert done.counts == {"train": 6, "val": 2, "test": 4} and list(a["class_names"]) == ["dog", "cat"]
    assert [str(f).split("/")[2] for f in a["source_file"][a["label"] == 0]] == ["dog"] * 6
    with pytest.raises(ConfigError, match="--name 'utkface' is a registered dataset"):
        prepare("folder", archive, tmp_path / "root", output_name="utkface")
    flat = _tree(tmp_path / "flat", {"a/x.png": files["train/cat/cat0.png"], "y.png": files["train/cat/cat0.png"]})
    with pytest.raises(DatasetError, match=re.escape("member 'y.png': an image outside any class folder")):
        prepare("folder", flat, tmp_path / "root", output_name="flat")


def test_own_folder_as_a_cropped_test_only_set(tmp_path: Path) -> None:
    """A cross-dataset test set: gender folders, cropped to the face box, no split array (all of it is tested)."""
    picture = np.zeros((50, 50), np.uint8)
    picture[10:30, 20:40] = 200  # the "face": what the crop keeps
    png = io.BytesIO()
    Image.fromarray(picture).save(png, format="PNG")
    folder = _tree(tmp_path / "gender", {f"{g}/{g}{i}.png": png.getvalue() for g in ("male", "female")
                                         for i in range(2)})
    assert main(["data", "prepare", "folder", "--src", str(folder), "--dst", str(tmp_path / "root"), "--name",
                 "lfw_gender", "--label-key", "gender", "--color", "gray", "--size", "20", "--crop", "20,10,40,30",
                 "--split", "none"]) == 0
    a = load_npz(tmp_path / "root" / "lfw_gender" / "lfw_gender_20.npz").arrays
    assert "split" not in a and list(a["gender_names"]) == ["female", "male"] and a["images"].shape == (4, 20, 20, 1)
    assert (a["images"] == 200).all()  # only the cropped box, at its own size
    with pytest.raises(ConfigError, match="crop: expected x0,y0,x1,y1"):
        prepare("folder", folder, tmp_path / "root", {"crop": (5, 5, 5, 9)}, output_name="bad")


def test_own_csv_numeric_labels_and_bad_rows(tmp_path: Path) -> None:
    images = {f"img/{i}.jpg": _image() for i in range(20)}
    _tree(tmp_path / "src", images)
    table = tmp_path / "src" / "ages.csv"
    table.write_text("file,age\n" + "".join(f"img/{i}.jpg,{20 + i}\n" for i in range(20)))
    done = prepare("csv", table, tmp_path / "root", {"label_key": "age", "seed": 1}, output_name="ages")
    a = load_npz(done.path).arrays
    assert a["age"].dtype == np.float32 and done.counts == {"train": 14, "val": 2, "test": 4}
    assert sorted(a["age"].tolist()) == list(range(20, 40))
    for text, message in (("file,age\nimg/0.jpg,\n", "line 2: missing age (the label)"),
                          ("file,age\nimg/0.jpg,3\nimg/99.jpg,4\n", "line 3: no image 'img/99.jpg'"),
                          ("file,age\n../secret.jpg,3\n", "line 2: image '../secret.jpg' would leave the folder"),
                          ("file,label\nimg/0.jpg,3\n", "no column 'age'"),
                          ("file,age,split\nimg/0.jpg,3,later\n", "line 2: split 'later' is none of")):
        table.write_text(text)
        with pytest.raises(DatasetError, match=re.escape(message)) as err:
            prepare("csv", table, tmp_path / "root", {"label_key": "age"}, output_name="ages")
        assert str(table) in str(err.value)


# --- archives: nothing escapes, damage is named ---------------------------------------------------------------------

def _tar_with(path: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("ok/a.jpg")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"abc"))
        tar.addfile(info, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize(("kind", "message"), [
    ("parent", "member '../evil.jpg' would leave the archive's folder"),
    ("absolute", "member '/etc/evil.jpg' would leave the archive's folder"),
    ("symlink", "member 'ok/link.jpg' is a symbolic link (to '/etc/passwd')"),
    ("hardlink", "member 'ok/hard.jpg' is a hard link (to 'ok/a.jpg')"),
    ("device", "member 'ok/dev' is a device or pipe"),
])
def test_tar_members_that_would_escape_are_refused(tmp_path: Path, kind: str, message: str) -> None:
    info = {"parent": tarfile.TarInfo("../evil.jpg"), "absolute": tarfile.TarInfo("/etc/evil.jpg"),
            "symlink": tarfile.TarInfo("ok/link.jpg"), "hardlink": tarfile.TarInfo("ok/hard.jpg"),
            "device": tarfile.TarInfo("ok/dev")}[kind]
    info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "device": tarfile.CHRTYPE}.get(kind,
                                                                                                         tarfile.REGTYPE)
    info.linkname = {"symlink": "/etc/passwd", "hardlink": "ok/a.jpg"}.get(kind, "")
    data = b"x" if info.type == tarfile.REGTYPE else b""
    info.size = len(data)
    path = _tar_with(tmp_path / "evil.tar", info, data)
    with pytest.raises(DatasetError, match=re.escape(message)) as err:
        Source(path)
    assert str(path) in str(err.value)


def test_a_forged_tar_header_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    """A PAX header that declares 8 MiB of attributes (zeros compress to a few KiB): tarfile would read it into
    memory whole while listing, before any member's size can be checked against the limit."""
    payload = b"0" * (8 * 2**20)
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, len(payload)
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(header, io.BytesIO(payload))
    assert path.stat().st_size < 64 * 2**10
    with pytest.raises(DatasetError, match=r"bomb.tar.gz: a tar header asks to read 8.0 MiB at once"):
        Source(path, max_bytes=1000)


def test_zips_python_cannot_read_or_whose_names_collide_are_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "d64.zip", {"a/x.jpg": b"abc"})
    raw = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # method field: local and central header
        at = raw.index(signature) + offset
        raw[at:at + 2] = (9).to_bytes(2, "little")  # Deflate64, as Windows writes large files
    path.write_bytes(raw)
    with pytest.raises(DatasetError, match=r"member 'a/x.jpg' is compressed with method 9 \(e.g. Deflate64\)"):
        Source(path)
    raw[raw.index(b"PK\x01\x02") + 8] |= 0x1  # the encrypted flag
    path.write_bytes(raw)
    with pytest.raises(DatasetError, match=r"member .a/x\.jpg. is encrypted"):
        Source(path)
    with pytest.raises(DatasetError, match=r"member 'a/./x.jpg' is 'a/x.jpg' again"):
        Source(_zip(tmp_path / "twice.zip", {"a/x.jpg": b"1", "a/./x.jpg": b"2"}))


def test_a_tar_is_read_as_a_tar_even_if_it_ends_with_a_zip(tmp_path: Path) -> None:
    inner = _zip(tmp_path / "notes.zip", {"notes.txt": b"hi"}).read_bytes()
    path = _tar(tmp_path / "data.tar", {"img/a.jpg": b"abc", "z/notes.zip": inner}, mode="w")
    with Source(path) as src:
        assert src.names() == ["img/a.jpg", "z/notes.zip"]


def test_a_csv_given_alone_looks_only_at_the_files_it_names(tmp_path: Path) -> None:
    _tree(tmp_path / "src", {"img/0.jpg": _image(), "img/1.jpg": _image()})
    (tmp_path / "src" / "unrelated_link").symlink_to("/etc")  # would refuse a walk of the whole folder
    table = tmp_path / "src" / "labels.csv"
    table.write_text("file,label\nimg/0.jpg,cat\nimg/1.jpg,dog\n")
    done = prepare("csv", table, tmp_path / "root", {"split": None}, output_name="pets")
    assert done.counts == {"images": 2}


def test_zip_members_that_would_escape_are_refused(tmp_path: Path) -> None:
    for name in ("../evil.jpg", "/abs/evil.jpg", "a/../../evil.jpg"):
        path = _zip(tmp_path / "evil.zip", {"ok.jpg": b"a", name: b"b"})
        with pytest.raises(DatasetError, match="would leave the archive's folder"):
            Source(path)
    link = zipfile.ZipInfo("ok/link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(DatasetError, match=re.escape("member 'ok/link.jpg' is a symbolic link")):
        Source(tmp_path / "link.zip")


def test_folder_links_may_not_leave_it(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {"a/x.jpg": b"x"})
    (tmp_path / "outside.jpg").write_bytes(b"secret")
    os.symlink(tmp_path / "outside.jpg", root / "a" / "y.jpg")
    with pytest.raises(DatasetError, match=r"'a/y.jpg' is a link to .*outside.jpg, outside the folder"):
        Source(root)
    (root / "a" / "y.jpg").unlink()
    os.symlink(root / "a" / "x.jpg", root / "a" / "inside.jpg")  # a link that stays inside is read through
    with Source(root) as src:
        assert src.read("a/inside.jpg") == b"x"


def test_truncated_archives_name_the_archive_and_member(tmp_path: Path) -> None:
    files = {f"UTKFace/{20 + i}_0_0_2017{i}.jpg.chip.jpg": RNG.bytes(20_000) for i in range(4)}
    whole = _tar(tmp_path / "whole.tar.gz", files).read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DatasetError, match=r"cut.tar.gz: not a readable tar archive, damaged or truncated after "
                                           r"member 'UTKFace/2"):
        Source(tmp_path / "cut.tar.gz")
    plain = _tar(tmp_path / "whole.tar", files, "w").read_bytes()
    (tmp_path / "cut.tar").write_bytes(plain[:50_000])  # inside the third member's data
    with pytest.raises(DatasetError, match=r"cut.tar: not a readable tar archive, damaged or truncated after member "
                                           r"'UTKFace/22_0_0_20172.jpg.chip.jpg' \(unexpected end of data\)"):
        Source(tmp_path / "cut.tar")
    with zipfile.ZipFile(tmp_path / "stored.zip", "w") as zf:  # stored: a flipped byte reaches the CRC check
        zf.writestr("d/a.jpg", bytes(1000))
    damaged = bytearray((tmp_path / "stored.zip").read_bytes())
    damaged[500] ^= 0xFF
    (tmp_path / "stored.zip").write_bytes(bytes(damaged))
    with pytest.raises(DatasetError, match=r"stored.zip: member 'd/a.jpg': cannot be read, the archive is damaged"), \
            Source(tmp_path / "stored.zip") as src:
        src.read("d/a.jpg")
    zipped = _zip(tmp_path / "whole.zip", files).read_bytes()
    (tmp_path / "cut.zip").write_bytes(zipped[: len(zipped) - 100])
    with pytest.raises(DatasetError, match=re.escape("cut.zip: not a readable zip archive, damaged or truncated")):
        prepare("utkface", tmp_path / "cut.zip", tmp_path / "root")


def test_unpacked_size_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {f"d/{i}.jpg": bytes(300_000) for i in range(4)}  # 1.2 MB of zeros: a few KB packed
    monkeypatch.setenv("ETLBENCH_MAX_DATA_BYTES", str(2**20))
    for path in (_tar(tmp_path / "bomb.tar.gz", files), _zip(tmp_path / "bomb.zip", files)):
        assert path.stat().st_size < 50_000
        with pytest.raises(DatasetError, match=r"unpacks to more than .* over the limit of 1.0 MiB .*"
                                               "ETLBENCH_MAX_DATA_BYTES"):
            Source(path)
    with Source(tmp_path / "bomb.zip", max_bytes=10**7) as src:
        assert len(src.read("d/0.jpg")) == 300_000


# --- writing and the command line -----------------------------------------------------------------------------------

def test_write_is_atomic_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "d" / "d.npz"
    good = {"images": np.zeros((6, 16, 16, 1), np.uint8), "split": np.array([0, 0, 0, 1, 2, 2], np.uint8)}
    first = write_canonical(good, path)
    bad = {**good, "split": np.zeros(6, np.uint8)}  # no val or test images: the read-back check refuses it
    with pytest.raises(DatasetError, match="the val split"):
        write_canonical(bad, path)
    assert load_npz(path).fingerprint == first.fingerprint  # the old file is untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["d.npz"]  # and no temporary file is left


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _tar_with(tmp_path / "evil.tar", tarfile.TarInfo("../evil.jpg"))
    assert main(["data", "prepare", "utkface", "--src", str(path), "--dst", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"etlbench: error: {path}: member '../evil.jpg' would leave the "
                                               "archive's folder (absolute or '..' path); refused")
    assert main(["data", "prepare", "utkface", "--src", str(path), "--dst", str(tmp_path), "--crop", "1,2,3,4"]) == 2
    assert "utkface: no parameter 'crop' (it takes size, subsample, seed, split)" in capsys.readouterr().err
    assert main(["data", "prepare", "synthetic", "--src", str(path), "--dst", str(tmp_path)]) == 2
    assert "dataset 'synthetic' has no converter" in capsys.readouterr().err


def test_verify_reports_and_fails_on_invalid_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "root"
    names = [f"{20 + i}_{i % 2}_{i % 5}_2017010{i}.jpg.chip.jpg" for i in range(10)]
    prepare("utkface", _tree(tmp_path / "utk", {n: _image() for n in names}), root, {"size": 16})
    assert main(["data", "verify", str(root)]) == 0
    out = capsys.readouterr().out
    assert "utkface_64.npz: utkface: valid" in out and "train 7, val 1, test 2" in out
    a = dict(load_npz(root / "utkface" / "utkface_64.npz").arrays)
    female = int(a["gender"][a["split"] == 0].sum())
    assert f"gender (uint8): train male {7 - female}, female {female};" in out and "tasks: age, gender" in out
    assert f"fingerprint {load_npz(root / 'utkface' / 'utkface_64.npz').fingerprint}" in out
    a["gender"] = np.full(10, 2, np.uint8)  # a label the gender task refuses
    np.savez_compressed(root / "utkface" / "utkface_64.npz", **a)
    (root / "other").mkdir()
    (root / "other" / "broken.npz").write_bytes(b"not a zip")
    assert main(["data", "verify", str(root)]) == 2
    captured = capsys.readouterr()
    assert "INVALID: task gender refuses it:" in captured.out and "outside 0..1" in captured.out
    assert "broken.npz: not a registered dataset: INVALID" in captured.out
    assert captured.err.startswith("etlbench: error: 2 of 2 dataset files are invalid")


@pytest.mark.skipif(not os.environ.get("ETLBENCH_DATA"), reason="real datasets absent: set ETLBENCH_DATA")
def test_staged_fer2013_verifies_with_its_known_fingerprint(capsys: pytest.CaptureFixture) -> None:
    path = Path(os.environ["ETLBENCH_DATA"]) / "fer2013" / "fer2013_48.npz"
    assert main(["data", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "fingerprint 58ad7946dd042a9d" in out and "train 8,000, val 3,589, test 3,589" in out
