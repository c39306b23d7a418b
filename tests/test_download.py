"""``etlbench data download``: pinned files fetched from a local HTTP server (127.0.0.1, a thread; nothing else is
ever contacted): resumed from a ``.part`` file with a Range request, checked against the MD5 before the rename;
datasets without a scripted download only say where to get them."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from etlbench import plugins
from etlbench.cli import main
from etlbench.errors import ConfigError, DatasetError
from etlbench.plugins import DatasetSpec, RemoteFile
from etlbench.prepare.download import chosen, download, fetch

BODY = bytes(range(256)) * 1200  # 300 KiB
MD5 = hashlib.md5(BODY, usedforsecurity=False).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves BODY at any path; honours ``Range: bytes=N-`` unless the path starts with /norange/."""

    ranges: ClassVar[list[str | None]] = []  # the Range header of each request

    def do_GET(self) -> None:
        type(self).ranges.append(self.headers.get("Range"))
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not self.path.startswith("/norange/"):
            start = int(match.group(1))
            if start >= len(BODY):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(BODY)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
            body = BODY[start:]
        else:
            self.send_response(200)
            body = BODY
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_partial_download_is_resumed_and_checked(server: str, tmp_path: Path) -> None:
    (tmp_path / "lfw.tgz.part").write_bytes(BODY[:100_000])
    path = fetch(RemoteFile(f"{server}/lfw/lfw.tgz", MD5), tmp_path, progress=False)
    assert path == tmp_path / "lfw.tgz" and path.read_bytes() == BODY
    assert _Handler.ranges == ["bytes=100000-"] and not (tmp_path / "lfw.tgz.part").exists()
    assert fetch(RemoteFile(f"{server}/lfw/lfw.tgz", MD5), tmp_path, progress=False) == path  # there: no request
    assert len(_Handler.ranges) == 1


def test_a_server_that_does_not_resume_starts_over(server: str, tmp_path: Path) -> None:
    (tmp_path / "x.tgz.part").write_bytes(b"stale bytes of another file")
    assert fetch(RemoteFile(f"{server}/norange/x.tgz", MD5), tmp_path, progress=False).read_bytes() == BODY


def test_a_whole_partial_file_is_checked_and_renamed(server: str, tmp_path: Path) -> None:
    (tmp_path / "x.tgz.part").write_bytes(BODY)
    assert fetch(RemoteFile(f"{server}/x.tgz", MD5), tmp_path, progress=False).read_bytes() == BODY  # HTTP 416


def test_a_checksum_mismatch_keeps_nothing(server: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=f"MD5 {MD5}, expected 0123456789abcdef0123456789abcdef"):
        fetch(RemoteFile(f"{server}/x.tgz", "0123456789abcdef0123456789abcdef"), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "x.tgz").write_bytes(b"something else")
    with pytest.raises(DatasetError, match="there already but its MD5 is"):
        fetch(RemoteFile(f"{server}/x.tgz", MD5), tmp_path, progress=False)


def test_only_http_is_fetched(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only http and https"):
        fetch(RemoteFile(f"file://{tmp_path}/x", MD5), tmp_path, progress=False)


def test_variants_and_progress(server: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = DatasetSpec("toy", "toy/toy.npz", ("verification",), "toy", converter="etlbench.prepare.lfw:convert",
                       downloads=(RemoteFile(f"{server}/a.tgz", MD5, "a"), RemoteFile(f"{server}/b.tgz", MD5, "b"),
                                  RemoteFile(f"{server}/pairs.txt", MD5)))
    assert [f.url.rsplit("/", 1)[1] for f in chosen(spec, None)] == ["a.tgz", "pairs.txt"]
    with pytest.raises(ConfigError, match="toy has the variants a, b, not 'c'"):
        chosen(spec, "c")
    result = download(spec, tmp_path, "b")
    assert result["files"] == [str(tmp_path / "b.tgz"), str(tmp_path / "pairs.txt")]
    assert f"--src {tmp_path / 'b.tgz'}" in result["next"]
    assert "MD5" in capsys.readouterr().err


def test_lfw_is_pinned_as_torchvision_pins_it() -> None:
    lfw = next(spec for spec in plugins.DATASETS if spec.name == "lfw_pairs")
    pinned = {f.url.rsplit("/", 1)[1]: f.md5 for f in lfw.downloads}
    assert pinned == {"lfw.tgz": "a17d05bd522c52d84eca14327a23d494",
                      "lfw-funneled.tgz": "1b42dfed7d15c9b2dd63d5e5840c86ad",
                      "lfw-deepfunneled.tgz": "68331da3eb755a505a502b5aacb3c201",
                      "pairs.txt": "9f1ba174e4e1c508ff7cdf10ac338a7d"}


@pytest.mark.parametrize("name", ["fer2013", "utkface", "aflw2000"])
def test_datasets_without_a_scripted_download_say_where_to_get_them(name: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("no download may happen here")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert main(["data", "download", name, "--dst", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no scripted download" in out and "http" in out and f"etlbench data prepare {name}" in out
    assert list(tmp_path.iterdir()) == []
