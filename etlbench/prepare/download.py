"""Fetching a dataset's distribution where its terms allow a scripted download (``etlbench data download``): each
file from its pinned URL, resumed from a ``.part`` file with an HTTP Range request, checked against its pinned MD5
before the final rename. Elsewhere (a login, Google Drive, a request form) it only says where to get the archive."""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TextIO

from etlbench.errors import ConfigError, DatasetError
from etlbench.plugins import DatasetSpec, RemoteFile
from etlbench.prepare.archives import mib

CHUNK = 1 << 16
TIMEOUT_S = 60


def md5_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


def chosen(spec: DatasetSpec, variant: str | None) -> list[RemoteFile]:
    """The files of ``spec`` to fetch: those of every download, and of the chosen variant (default: the first)."""
    variants = list(dict.fromkeys(f.variant for f in spec.downloads if f.variant))
    if variant is not None and variant not in variants:
        raise ConfigError(f"--variant: {spec.name} has " + (f"the variants {', '.join(variants)}" if variants else
                                                             "no variants") + f", not {variant!r}", "variant")
    pick = variant or (variants[0] if variants else "")
    return [f for f in spec.downloads if f.variant in ("", pick)]


def fetch(remote: RemoteFile, dst: Path, progress: TextIO | bool = True) -> Path:
    """``remote`` into ``dst``: kept as it is where a file of the right MD5 is there already; otherwise fetched into
    ``<name>.part`` (resuming a partial one with ``Range: bytes=N-``; from the start where the server ignores the
    range), checked against the pinned MD5, then renamed. A mismatch removes the ``.part`` file and is an error."""
    url = urllib.parse.urlsplit(remote.url)
    if url.scheme not in ("http", "https"):
        raise ConfigError(f"{remote.url}: only http and https downloads are allowed")
    final = dst / Path(url.path).name
    if final.is_file():
        if md5_of(final) == remote.md5:
            _say(progress, f"{final}: there already, MD5 {remote.md5} checked")
            return final
        raise DatasetError(f"{final}: there already but its MD5 is {md5_of(final)}, not {remote.md5}; remove it "
                           "and run again")
    dst.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    _get(remote.url, part, progress)
    got = md5_of(part)
    if got != remote.md5:
        part.unlink()
        raise DatasetError(f"{remote.url}: MD5 {got}, expected {remote.md5} (a damaged or changed download; the "
                           f"partial file {part.name} was removed, run again)")
    os.replace(part, final)
    _say(progress, f"{final}: MD5 {got} checked")
    return final


def _get(url: str, part: Path, progress: TextIO | bool) -> None:
    """The bytes of ``url`` appended to ``part`` from its current length (the whole file where it cannot resume)."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # fetch() allowed only http and https
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the range starts at the end: the partial file is whole (its MD5 decides)
            return
        raise DatasetError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise DatasetError(f"{url}: cannot be reached ({getattr(err, 'reason', err)})") from err
    with response:
        resumed = response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            raise DatasetError(f"{url}: asked for the bytes from {have:,} on, got the range "
                               f"{response.headers.get('Content-Range')!r}; remove {part} and run again")
        if have and not resumed:
            _say(progress, f"{url}: the server does not resume; starting again from the first byte")
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and re.fullmatch(r"\d+", length, re.ASCII) else None
        with open(part, "ab" if resumed else "wb") as out:
            done, shown = have, 0.0
            if resumed:
                _say(progress, f"{url}: resuming after {have:,} bytes")
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if time.monotonic() - shown > 1:
                        shown = time.monotonic()
                        _say(progress, f"{part.name}: {mib(done)}" + (f" of {mib(total)}" if total else ""), "\r")
            except OSError as err:
                raise DatasetError(f"{url}: the download broke off after {done:,} bytes ({err}); run again to "
                                   "resume it") from err
        _say(progress, f"{part.name}: {mib(done)}" + (f" of {mib(total)}" if total else ""))
    if total is not None and done != total:
        raise DatasetError(f"{url}: got {done:,} of {total:,} bytes; run again to resume")


def _say(progress: TextIO | bool, text: str, end: str = "\n") -> None:
    """``text`` on ``progress`` (``True``: stderr; ``False``: nowhere)."""
    if progress is not False:
        print(f"etlbench data: {text}", end=end, file=sys.stderr if progress is True else progress, flush=True)


def download(spec: DatasetSpec, dst: Path, variant: str | None = None,
             progress: TextIO | bool = True) -> dict[str, object]:
    """What ``etlbench data download`` does for ``spec``: the files fetched, or (where no scripted download is
    allowed) where to get the source and what to do next."""
    if not spec.downloads:
        if spec.converter is None:
            raise ConfigError(f"dataset {spec.name!r} is not downloaded: {spec.description}")
        return {"dataset": spec.name, "files": [], "instructions": spec.obtain,
                "next": f"etlbench data prepare {spec.name} --src <the archive> --dst <data root>, then "
                        f"etlbench data verify <data root>/{spec.relative_path} (results/README.md gives the "
                        "fingerprint that the staged file has)"}
    files = [str(fetch(f, dst, progress)) for f in chosen(spec, variant)]
    images = next((f for f in files if not f.endswith(".txt")), files[0])
    return {"dataset": spec.name, "files": files, "instructions": spec.obtain,
            "next": f"etlbench data prepare {spec.name} --src {images} --dst <data root>"}
