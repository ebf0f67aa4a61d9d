"""Tests of safe_extract on real tar and zip archives built member by member."""

from __future__ import annotations

import io
import json
import random
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from srttt.data.archive import MARKER_NAME, CorruptArchiveError, UnsafeArchiveError, safe_extract

RNG_SEED = 20220608


def case_files() -> dict[str, bytes]:
    """An MSD-like layout with nested folders and random bytes standing in for NIfTI files."""
    rng = random.Random(RNG_SEED)
    return {
        "Task08_HepaticVessel/dataset.json": b'{"name": "HepaticVessel"}',
        "Task08_HepaticVessel/imagesTr/hepaticvessel_001.nii.gz": rng.randbytes(40_000),
        "Task08_HepaticVessel/labelsTr/hepaticvessel_001.nii.gz": rng.randbytes(9_000),
        "Task08_HepaticVessel/imagesTs/deep/er/hepaticvessel_002.nii.gz": rng.randbytes(5_000),
    }


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def add_special(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    """Add a member without data (link, device, FIFO), written by name only."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    tar.addfile(info)


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w", specials=()) -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            add_file(tar, name, data)
        for name, kind, linkname in specials:
            add_special(tar, name, kind, linkname)
    return path


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zip_file:
        for name, data in files.items():
            zip_file.writestr(name, data)
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` except the marker, by POSIX relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and path.name != MARKER_NAME
    }


TAR_MODES = [("w", ".tar"), ("w:gz", ".tar.gz"), ("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz")]


@pytest.mark.parametrize("mode, suffix", TAR_MODES)
def test_tar_extracts_nested_folders(tmp_path, mode, suffix):
    files = case_files()
    archive = write_tar(tmp_path / f"Task08_HepaticVessel{suffix}", files, mode)
    target = tmp_path / "raw" / "msd"

    result = safe_extract(archive, target, progress=False)

    assert result == target
    assert tree(target) == files
    marker = json.loads((target / MARKER_NAME).read_text())
    assert marker == {"archive": archive.name, "size": archive.stat().st_size}
    assert list((tmp_path / "raw").iterdir()) == [target]


def test_zip_extracts_nested_folders(tmp_path):
    files = case_files()
    archive = write_zip(tmp_path / "Task03_Liver.zip", files)
    target = tmp_path / "liver"

    safe_extract(archive, target, progress=False)

    assert tree(target) == files


def test_tar_keeps_links_inside_target(tmp_path):
    files = {"data/a.nii.gz": b"volume"}
    specials = [
        ("data/alias.nii.gz", tarfile.SYMTYPE, "a.nii.gz"),
        ("copy.nii.gz", tarfile.LNKTYPE, "data/a.nii.gz"),
    ]
    archive = write_tar(tmp_path / "links.tar", files, specials=specials)
    target = tmp_path / "out"

    safe_extract(archive, target, progress=False)

    assert (target / "data" / "alias.nii.gz").is_symlink()
    assert (target / "data" / "alias.nii.gz").read_bytes() == b"volume"
    assert (target / "copy.nii.gz").read_bytes() == b"volume"


def test_extract_twice_skips_second(tmp_path):
    archive = write_tar(tmp_path / "cases.tar", case_files())
    target = tmp_path / "out"
    safe_extract(archive, target, progress=False)
    edited = target / "Task08_HepaticVessel" / "dataset.json"
    edited.write_bytes(b"edited after extraction")

    safe_extract(archive, target, progress=False)

    assert edited.read_bytes() == b"edited after extraction"


# name: (members to add, member named in the error, rejected by the checks before extraction)
UNSAFE_TAR_MEMBERS = {
    "parent component": ([("../evil", tarfile.REGTYPE, "")], "../evil", True),
    "nested parent component": ([("cases/../../evil", tarfile.REGTYPE, "")], "cases/../../evil", True),
    "absolute path": ([("/etc/x", tarfile.REGTYPE, "")], "/etc/x", True),
    "symlink outside": ([("cases/link", tarfile.SYMTYPE, "../../outside")], "cases/link", True),
    "absolute symlink": ([("cases/passwd", tarfile.SYMTYPE, "/etc/passwd")], "cases/passwd", True),
    "hard link outside": ([("cases/hard", tarfile.LNKTYPE, "../outside")], "cases/hard", True),
    "character device": ([("cases/null", tarfile.CHRTYPE, "")], "cases/null", True),
    "block device": ([("cases/disk", tarfile.BLKTYPE, "")], "cases/disk", True),
    "fifo": ([("cases/pipe", tarfile.FIFOTYPE, "")], "cases/pipe", True),
    # Each link is inside lexically, but "root" resolves to the target itself, so "escape"
    # points at the target's parent. Only the data filter, which resolves real paths, detects it.
    "symlink chain outside": (
        [("root", tarfile.SYMTYPE, "."), ("escape", tarfile.SYMTYPE, "root/../outside")],
        "escape",
        False,
    ),
}


@pytest.mark.parametrize(
    "specials, member, before_extraction", UNSAFE_TAR_MEMBERS.values(), ids=UNSAFE_TAR_MEMBERS.keys()
)
def test_tar_unsafe_member_rejected(tmp_path, specials, member, before_extraction):
    archive = write_tar(tmp_path / "bad.tar", {"cases/ok.nii.gz": b"fine"}, specials=specials)
    target = tmp_path / "work" / "out"

    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract(archive, target, progress=False)

    assert member in str(caught.value)
    assert str(archive) in str(caught.value)
    # The member checks raise directly; the data filter's FilterError becomes the cause.
    assert isinstance(caught.value.__cause__, tarfile.FilterError) is not before_extraction
    assert not target.exists()
    assert not (tmp_path / "work" / ".out.extracting").exists()
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "work" / "evil").exists()
    assert not (tmp_path / "work" / "outside").exists()


def test_tar_gz_unsafe_member_rejected(tmp_path):
    specials = [("../evil", tarfile.REGTYPE, "")]
    archive = write_tar(tmp_path / "bad.tar.gz", case_files(), "w:gz", specials=specials)
    target = tmp_path / "out"

    with pytest.raises(UnsafeArchiveError, match=r"'\.\./evil'"):
        safe_extract(archive, target, progress=False)

    assert not target.exists()


def zip_with(tmp_path: Path, info: zipfile.ZipInfo) -> Path:
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zip_file:
        zip_file.writestr("cases/ok.nii.gz", b"fine")
        zip_file.writestr(info, b"payload")
    return path


def zip_member(name: str, mode: int = 0) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


UNSAFE_ZIP_MEMBERS = {
    "parent component": zip_member("../evil"),
    "absolute path": zip_member("/etc/x"),
    "windows drive": zip_member("C:/evil"),
    "symlink": zip_member("cases/link", stat.S_IFLNK | 0o777),
    "fifo": zip_member("cases/pipe", stat.S_IFIFO | 0o644),
}


@pytest.mark.parametrize("info", UNSAFE_ZIP_MEMBERS.values(), ids=UNSAFE_ZIP_MEMBERS.keys())
def test_zip_unsafe_member_rejected(tmp_path, info):
    archive = zip_with(tmp_path, info)
    target = tmp_path / "out"

    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract(archive, target, progress=False)

    assert info.filename in str(caught.value)
    assert not target.exists()
    assert not (tmp_path / ".out.extracting").exists()
    assert not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize("mode, suffix", [("w", ".tar"), ("w:gz", ".tar.gz"), ("w:xz", ".tar.xz")])
def test_truncated_tar_rejected(tmp_path, mode, suffix):
    complete = write_tar(tmp_path / f"complete{suffix}", case_files(), mode).read_bytes()
    archive = tmp_path / f"truncated{suffix}"
    archive.write_bytes(complete[: len(complete) // 2])
    target = tmp_path / "out"

    with pytest.raises(CorruptArchiveError) as caught:
        safe_extract(archive, target, progress=False)

    assert str(archive) in str(caught.value)
    assert "download it again" in str(caught.value)
    assert not target.exists()
    assert not (tmp_path / ".out.extracting").exists()


def test_truncated_zip_rejected(tmp_path):
    complete = write_zip(tmp_path / "complete.zip", case_files()).read_bytes()
    archive = tmp_path / "truncated.zip"
    archive.write_bytes(complete[: len(complete) // 2])

    with pytest.raises(CorruptArchiveError, match="download it again"):
        safe_extract(archive, tmp_path / "out", progress=False)

    assert not (tmp_path / "out").exists()


def test_zip_crc_mismatch_rejected(tmp_path):
    files = {"cases/a.bin": bytes(range(256)) * 40}
    data = bytearray(write_zip(tmp_path / "good.zip", files).read_bytes())
    with zipfile.ZipFile(tmp_path / "good.zip") as zip_file:
        info = zip_file.getinfo("cases/a.bin")
    # The compressed data starts after the 30-byte local header, the name and the extra field.
    data_start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[data_start + 5] ^= 0xFF
    archive = tmp_path / "bad.zip"
    archive.write_bytes(bytes(data))

    with pytest.raises(CorruptArchiveError, match="bad.zip"):
        safe_extract(archive, tmp_path / "out", progress=False)

    assert not (tmp_path / "out").exists()


def test_non_archive_rejected(tmp_path):
    archive = tmp_path / "Task03_Liver.tar"
    archive.write_bytes(b"<html>404 Not Found</html>" * 40)

    with pytest.raises(CorruptArchiveError, match="Task03_Liver.tar"):
        safe_extract(archive, tmp_path / "out", progress=False)


def test_rerun_removes_leftover_staging(tmp_path):
    files = case_files()
    archive = write_tar(tmp_path / "cases.tar.gz", files, "w:gz")
    target = tmp_path / "out"
    leftover = tmp_path / ".out.extracting"
    (leftover / "Task08_HepaticVessel").mkdir(parents=True)
    (leftover / "Task08_HepaticVessel" / "half_written.nii.gz").write_bytes(b"\x1f\x8b partial")

    safe_extract(archive, target, progress=False)

    assert tree(target) == files
    assert not leftover.exists()


def test_extract_into_empty_target_folder(tmp_path):
    files = case_files()
    archive = write_tar(tmp_path / "cases.tar", files)
    target = tmp_path / "out"
    target.mkdir()

    safe_extract(archive, target, progress=False)

    assert tree(target) == files


def test_target_with_foreign_files_rejected(tmp_path):
    archive = write_tar(tmp_path / "cases.tar", case_files())
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("mine")

    with pytest.raises(FileExistsError, match="Delete"):
        safe_extract(archive, target, progress=False)

    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


def test_missing_archive_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.tar"):
        safe_extract(tmp_path / "absent.tar", tmp_path / "out", progress=False)
