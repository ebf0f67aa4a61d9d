"""Safe, atomic extraction of tar and zip archives.

Every member is checked before anything is written: absolute names, ``..``
components, links that leave the target folder, device files and FIFOs are
rejected. Tar extraction also runs Python's ``filter="data"`` extraction filter
(Python 3.11.4 and later) as a second line of defence. Members are extracted into
a hidden sibling folder that is renamed onto the target only when complete, and a
marker file in the target records which archive it came from.
"""

from __future__ import annotations

import gzip
import json
import logging
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from tqdm import tqdm

logger = logging.getLogger(__name__)

# A file in the target folder that marks a complete extraction. It contains the
# archive's name and size in bytes as JSON.
MARKER_NAME = ".extracted"

# Errors that a truncated or corrupt tar raises while it is read.
_TAR_READ_ERRORS = (tarfile.ReadError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)
# While only listing, OSError also means an unreadable archive (bz2 raises it for an
# invalid data stream). During extraction it can be a write error, such as a full disk.
_TAR_LIST_ERRORS = (*_TAR_READ_ERRORS, tarfile.TarError, OSError)
_ZIP_READ_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError)


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the target folder, or is a device file or FIFO."""


class CorruptArchiveError(ValueError):
    """An archive is truncated, corrupt, or neither a tar nor a zip file."""


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike, *, progress: bool = True) -> Path:
    """Extract a tar (plain, gz, bz2, xz) or zip ``archive`` into the folder ``target``.

    The members go into ``.<target name>.extracting`` beside ``target``, which is
    renamed onto ``target`` once every member is written. A leftover folder of
    that name from an interrupted run is removed first.

    Returns:
        ``target`` as a ``Path``. If it already contains a marker for this archive
        (same name and size), nothing is extracted.

    Raises:
        FileNotFoundError: ``archive`` does not exist.
        FileExistsError: ``target`` is a file, or a non-empty folder without a marker for this archive.
        UnsafeArchiveError: a member has an absolute name or a ``..`` component, is a link
            that points outside ``target``, or is a device file, FIFO or other special file.
            Nothing is written to ``target``.
        CorruptArchiveError: the archive cannot be read completely. Nothing is written to ``target``.
    """
    archive = Path(archive)
    target = Path(target)
    if not archive.is_file():
        msg = f"Archive {archive} not found; download it first or fix its path in params.yaml."
        raise FileNotFoundError(msg)
    stamp = {"archive": archive.name, "size": archive.stat().st_size}
    if _is_extracted(target, stamp):
        logger.info("%s already contains %s; not extracting it again", target, archive.name)
        return target
    _check_target_free(target, archive)

    staging = target.with_name(f".{target.name}.extracting")
    if staging.exists():
        logger.warning("Removing %s left by an interrupted extraction", staging)
        shutil.rmtree(staging)

    extract = _extract_zip if zipfile.is_zipfile(archive) else _extract_tar
    try:
        extract(archive, staging, progress=progress)
        (staging / MARKER_NAME).write_text(json.dumps(stamp) + "\n", encoding="utf-8")
        # os.replace renames a folder onto a missing or empty folder atomically (POSIX rename).
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Extracted %s to %s", archive, target)
    return target


def _is_extracted(target: Path, stamp: dict) -> bool:
    marker = target / MARKER_NAME
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == stamp
    except json.JSONDecodeError:
        return False


def _check_target_free(target: Path, archive: Path) -> None:
    """Raise FileExistsError unless ``target`` is missing or an empty folder."""
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    msg = (
        f"Cannot extract {archive} into {target}: it exists without a {MARKER_NAME} marker for this "
        f"archive, so it is incomplete or holds other files. Delete {target} and rerun, or choose "
        f"another target folder."
    )
    raise FileExistsError(msg)


# -- Member checks --------------------------------------------------------------


def _unsafe(archive: Path, problem: str) -> UnsafeArchiveError:
    msg = (
        f"Archive {archive} {problem}; nothing was extracted. Check its md5 against the expected one, "
        f"or delete it and download it again from the official mirror."
    )
    return UnsafeArchiveError(msg)


def _check_name(archive: Path, name: str) -> None:
    """Reject a member name that is absolute or has a ``..`` component, in POSIX or Windows form."""
    windows = PureWindowsPath(name)
    if PurePosixPath(name).is_absolute() or windows.drive or windows.root:
        raise _unsafe(archive, f"has a member with an absolute path: {name!r}")
    if ".." in PurePosixPath(name).parts or ".." in windows.parts:
        raise _unsafe(archive, f"has a member with a '..' component: {name!r}")


def _check_link(archive: Path, name: str, link_target: str, *, hard: bool) -> None:
    """Reject a link whose target, resolved inside the archive, leaves the archive root.

    A symbolic link is resolved from the folder holding it, a hard link from the
    archive root. The resolution is lexical, so a chain through other symbolic
    links is left to the ``data`` extraction filter, which resolves real paths.
    """
    kind = "hard link" if hard else "symbolic link"
    if posixpath.isabs(link_target) or PureWindowsPath(link_target).drive:
        raise _unsafe(archive, f"has a {kind} {name!r} to the absolute path {link_target!r}")
    start = "" if hard else posixpath.dirname(name)
    resolved = posixpath.normpath(posixpath.join(start, link_target))
    if resolved == ".." or resolved.startswith("../"):
        raise _unsafe(archive, f"has a {kind} {name!r} to {link_target!r}, outside the target folder")


def _check_tar_member(archive: Path, member: tarfile.TarInfo) -> None:
    _check_name(archive, member.name)
    if member.ischr() or member.isblk() or member.isfifo():
        raise _unsafe(archive, f"has a device file or FIFO {member.name!r}")
    if member.issym() or member.islnk():
        _check_link(archive, member.name, member.linkname, hard=member.islnk())
    elif not (member.isfile() or member.isdir()):
        raise _unsafe(archive, f"has a member {member.name!r} of unsupported tar type {member.type!r}")


def _check_zip_member(archive: Path, info: zipfile.ZipInfo) -> None:
    """Check the name and the Unix file type stored in the upper 16 bits of ``external_attr``."""
    _check_name(archive, info.filename)
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        # zipfile would write the link as a regular file containing the target path.
        raise _unsafe(archive, f"has a symbolic link {info.filename!r}, which zip extraction does not keep")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise _unsafe(archive, f"has a device file, FIFO or socket {info.filename!r}")


# -- Extraction -----------------------------------------------------------------


def _corrupt(archive: Path, error: BaseException) -> CorruptArchiveError:
    msg = f"Archive {archive} is truncated or corrupt ({error!r}); delete it and download it again."
    return CorruptArchiveError(msg)


def _counted(members: Iterable, bar: tqdm) -> Iterator:
    for member in members:
        yield member
        bar.update(1)


def _extract_tar(archive: Path, staging: Path, *, progress: bool) -> None:
    """List and check every member (reading the whole archive), then extract them into ``staging``."""
    try:
        tar = tarfile.open(archive, "r:*", errorlevel=1)
    except _TAR_LIST_ERRORS as error:
        raise _corrupt(archive, error) from error
    with tar:
        try:
            members = tar.getmembers()
        except _TAR_LIST_ERRORS as error:
            raise _corrupt(archive, error) from error
        for member in members:
            _check_tar_member(archive, member)

        staging.mkdir(parents=True)
        try:
            with tqdm(total=len(members), unit="file", desc=archive.name, disable=not progress) as bar:
                tar.extractall(staging, members=_counted(members, bar), filter="data")
        except tarfile.FilterError as error:
            raise _unsafe(archive, f"has an unsafe member: {error}") from error
        except _TAR_READ_ERRORS as error:
            raise _corrupt(archive, error) from error


def _extract_zip(archive: Path, staging: Path, *, progress: bool) -> None:
    """Check every member name and type, then extract them into ``staging``, which checks each CRC."""
    try:
        zip_file = zipfile.ZipFile(archive)
    except _ZIP_READ_ERRORS as error:
        raise _corrupt(archive, error) from error
    with zip_file:
        infos = zip_file.infolist()
        for info in infos:
            _check_zip_member(archive, info)

        staging.mkdir(parents=True)
        try:
            with tqdm(total=len(infos), unit="file", desc=archive.name, disable=not progress) as bar:
                for info in _counted(infos, bar):
                    zip_file.extract(info, staging)
        except _ZIP_READ_ERRORS as error:
            raise _corrupt(archive, error) from error
