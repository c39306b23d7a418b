"""A safe, read-only view of a dataset's distribution: a folder, a zip, a tar (plain, gzip, bzip2 or xz) or one
plain file. Members are read in place, never extracted; none may leave the source (``..``, absolute names, links
and device files in a tar or zip, links out of a folder), and everything read is bounded by
:func:`etlbench.data.canonical.max_data_bytes` (``ETLBENCH_MAX_DATA_BYTES``). A damaged or truncated archive is a
:class:`~etlbench.errors.DatasetError` that names the archive and the member."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType

from etlbench.data.canonical import MAX_DATA_BYTES_ENV, max_data_bytes
from etlbench.errors import DatasetError

#: What tarfile, zipfile and the decompressors raise on a damaged, truncated or unsupported archive.
_DAMAGED = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError,
            RuntimeError, NotImplementedError)
_TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
                zipfile.ZIP_LZMA: "lzma"}
#: The most one read may take while a tar's headers are listed: a real header (even a PAX or GNU long name) is a
#: few KiB; a forged one could ask for gigabytes before any member's size is known.
MAX_HEADER_READ = 2**20


def mib(n: int) -> str:
    """``n`` bytes in MiB, as errors and progress lines say sizes."""
    return f"{n / 2**20:.1f} MiB"


class _HeaderBound(io.RawIOBase):
    """A decompressed tar stream whose single reads are capped at :data:`MAX_HEADER_READ` while ``listing``."""

    def __init__(self, stream: io.BufferedIOBase, where: Path):
        self.stream, self.where, self.listing = stream, where, True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.listing and (n < 0 or n > MAX_HEADER_READ):
            raise DatasetError(f"{self.where}: a tar header asks to read {'everything' if n < 0 else mib(n)} at "
                               f"once (a real header is a few KiB); refused as forged")
        return self.stream.read(n)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()

    def close(self) -> None:
        self.stream.close()
        super().close()


def _decompressed(path: Path) -> io.BufferedIOBase:
    """``path`` opened for reading, decompressed by its magic bytes (gzip, bzip2, xz) or as it is."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(path, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")
    return open(path, "rb")


def reason(err: BaseException) -> str:
    """The first line of an error, short: what an error message quotes of its cause."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200] or type(err).__name__


def safe_name(name: str) -> str | None:
    """``name`` as a relative POSIX path inside the source, or None where it would leave it."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (parts and len(parts[0]) == 2 and parts[0][1] == ":") or ".." in parts:
        return None
    return str(PurePosixPath(*[p for p in parts if p not in ("", ".")]))


@dataclass(frozen=True)
class _Member:
    name: str
    size: int
    handle: object  # the ZipInfo, TarInfo or Path behind it


class Source:
    """The files of ``path`` (a folder, a zip, a tar or a plain file) by their relative POSIX names.

    >>> with Source("/data/UTKFace.tar.gz") as src:            # doctest: +SKIP
    ...     for name, data in src.read_many(src.names()[:2]):
    ...         print(name, len(data))
    """

    def __init__(self, path: str | os.PathLike, max_bytes: int | None = None, only: Iterable[str] | None = None):
        """``only``: of a folder, just these relative names (each checked like a listed file), without walking the
        rest of it."""
        self.path = Path(path)
        self._only = None if only is None else list(only)
        self.limit = max_data_bytes() if max_bytes is None else max_bytes
        self.read_bytes = 0
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        if not self.path.exists():
            raise DatasetError(f"{self.path}: not found (expected a folder, a zip, a tar archive or a file)")
        try:
            self._members = self._list()
        except DatasetError:
            self.close()
            raise
        total = sum(m.size for m in self._members.values())
        if total > self.limit:
            self.close()
            raise self._over(total)

    # ---- listing ----------------------------------------------------------------------------------------
    def _list(self) -> dict[str, _Member]:
        if self.path.is_dir():
            return self._list_folder() if self._only is None else self._list_named()
        if self.path.name.lower().endswith(_TAR_SUFFIXES):  # by name first: a tar may end with a zip member
            return self._list_tar()
        if self.path.suffix.lower() == ".zip" or zipfile.is_zipfile(self.path):
            return self._list_zip()
        return {self.path.name: _Member(self.path.name, self.path.stat().st_size, self.path)}

    def _list_folder(self) -> dict[str, _Member]:
        root = self.path.resolve()
        members: dict[str, _Member] = {}
        for folder, dirs, files in os.walk(self.path):
            for entry in [*dirs, *files]:
                full = Path(folder, entry)
                name = full.relative_to(self.path).as_posix()
                if full.is_symlink() and not full.resolve().is_relative_to(root):
                    raise DatasetError(f"{self.path}: {name!r} is a link to {full.resolve()}, outside the folder "
                                       "(links must stay inside the source)")
            for entry in files:
                full = Path(folder, entry)
                name = full.relative_to(self.path).as_posix()
                members[name] = self._file(name, full)
        return members

    def _file(self, name: str, full: Path) -> _Member:
        """One regular file of a folder source."""
        try:
            info = full.stat()
        except OSError as err:
            raise DatasetError(f"{self.path}: {name!r} cannot be read ({reason(err)})") from err
        if not stat.S_ISREG(info.st_mode):
            raise DatasetError(f"{self.path}: {name!r} is not a regular file (a device, socket or pipe)")
        return _Member(name, info.st_size, full)

    def _list_named(self) -> dict[str, _Member]:
        """The files ``only`` names in a folder (missing ones are left out: the caller says which it needs)."""
        root, members = self.path.resolve(), {}
        for given in self._only or []:
            name = safe_name(given)
            full = self.path / name if name is not None else None
            if full is None or not full.resolve().is_relative_to(root):
                raise DatasetError(f"{self.path}: {given!r} would leave the folder; refused")
            if full.exists():
                members[name] = self._file(name, full)
        return members

    def _add(self, members: dict[str, _Member], name: str, member: _Member, raw: str) -> None:
        """``member`` under its normalised ``name``; two members that normalise alike are refused."""
        if name in members:
            raise DatasetError(f"{self.path}: member {raw!r} is {name!r} again (after normalising the path); "
                               "refused: which one is meant is unclear")
        members[name] = member

    def _list_zip(self) -> dict[str, _Member]:
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except _DAMAGED as err:
            raise DatasetError(f"{self.path}: not a readable zip archive, damaged or truncated "
                               f"({reason(err)})") from err
        members: dict[str, _Member] = {}
        for info in infos:
            name = safe_name(info.filename)
            if name is None:
                raise DatasetError(f"{self.path}: member {info.filename!r} would leave the archive's folder "
                                   "(absolute or '..' path); refused")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DatasetError(f"{self.path}: member {info.filename!r} is a symbolic link; refused")
            if info.flag_bits & 0x1:
                raise DatasetError(f"{self.path}: member {info.filename!r} is encrypted; expected an archive "
                                   "without a password")
            if info.compress_type not in _ZIP_METHODS:
                raise DatasetError(f"{self.path}: member {info.filename!r} is compressed with method "
                                   f"{info.compress_type} (e.g. Deflate64), which Python cannot read; expected one "
                                   f"of {', '.join(_ZIP_METHODS.values())} (re-zip it, or give the folder)")
            if not info.is_dir():
                self._add(members, name, _Member(name, info.file_size, info), info.filename)
        return members

    def _list_tar(self) -> dict[str, _Member]:
        members: dict[str, _Member] = {}
        last = ""
        try:
            stream = _HeaderBound(_decompressed(self.path), self.path)
            self._tar = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115 (kept open; close() closes it)
            while (info := self._tar.next()) is not None:
                last = info.name
                name = safe_name(info.name)
                if name is None:
                    raise DatasetError(f"{self.path}: member {info.name!r} would leave the archive's folder "
                                       "(absolute or '..' path); refused")
                if info.issym() or info.islnk():
                    raise DatasetError(f"{self.path}: member {info.name!r} is a "
                                       f"{'symbolic' if info.issym() else 'hard'} link (to {info.linkname!r}); "
                                       "refused")
                if not (info.isfile() or info.isdir()):
                    raise DatasetError(f"{self.path}: member {info.name!r} is a device or pipe; refused")
                if info.offset_data + info.size > self.limit:  # decided from the header, before the data is read
                    raise self._over(info.offset_data + info.size)
                if info.isfile():
                    self._add(members, name, _Member(name, info.size, info), info.name)
            stream.listing = False
        except DatasetError:
            raise
        except _DAMAGED as err:
            where = f"after member {last!r}" if last else "at its start"
            raise DatasetError(f"{self.path}: not a readable tar archive, damaged or truncated {where} "
                               f"({reason(err)})") from err
        return members

    def _over(self, total: int) -> DatasetError:
        return DatasetError(f"{self.path}: unpacks to more than {mib(total)}, over the limit of "
                            f"{mib(self.limit)} (set {MAX_DATA_BYTES_ENV} to raise it)")

    # ---- reading ----------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every file member, sorted."""
        return sorted(self._members)

    def where(self, name: str) -> str:
        """How errors name a member: the source and the member (a plain file: itself)."""
        return str(self.path) if self.single_file else f"{self.path}: member {name!r}"

    @property
    def single_file(self) -> bool:
        """Whether the source is one plain file (its only member is itself)."""
        return self.path.is_file() and self._zip is None and self._tar is None

    def read(self, name: str) -> bytes:
        """The bytes of member ``name``."""
        member = self._members.get(name)
        if member is None:
            raise DatasetError(f"{self.path}: no member {name!r}")
        if self.read_bytes + member.size > self.limit:
            raise self._over(self.read_bytes + member.size)
        try:
            if self._zip is not None:
                data = self._zip.read(member.handle)
            elif self._tar is not None:
                stream = self._tar.extractfile(member.handle)
                data = stream.read() if stream is not None else b""
            else:
                data = Path(member.handle).read_bytes()
        except _DAMAGED as err:
            raise DatasetError(f"{self.where(name)}: cannot be read, the archive is damaged or truncated "
                               f"({reason(err)})") from err
        if len(data) != member.size:
            raise DatasetError(f"{self.where(name)}: holds {len(data)} of its {member.size} bytes: the archive is "
                               "truncated")
        self.read_bytes += len(data)
        return data

    def read_many(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """``(name, bytes)`` of each of ``names``, in the order they are stored (one pass over a compressed tar)."""
        def stored(name: str) -> tuple[int, str]:
            handle = self._members[name].handle if name in self._members else None
            if isinstance(handle, tarfile.TarInfo):
                return handle.offset, name
            return (handle.header_offset if isinstance(handle, zipfile.ZipInfo) else 0), name

        for name in sorted(names, key=stored):
            yield name, self.read(name)

    def close(self) -> None:
        for archive in (self._zip, self._tar):
            if archive is not None:
                archive.close()
        if self._tar is not None and self._tar.fileobj is not None:
            self._tar.fileobj.close()  # a tar opened on a file object leaves it open

    def __enter__(self) -> Source:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
