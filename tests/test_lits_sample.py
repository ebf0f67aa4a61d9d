"""Tests for fetching LiTS volume 117 from a wheel and writing it as NIfTI.

No test reaches the internet: a small fake wheel with the same member layout
as ``liver-ct-segmentation-package==1.6.0`` is served from a PEP 503 simple
index on 127.0.0.1, and the real ``pip download`` fetches it from there.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import os
import threading
import zipfile
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from scipy import ndimage

from srttt.data.lits_sample import (
    IMAGE_MEMBER,
    LABEL_MEMBER,
    FetchError,
    download_wheel,
    fetch_lits_sample,
    lits_to_msd,
    read_mrc_pair,
    sha256_of,
)
from srttt.io.nifti import load_volume

PACKAGE = "liver-ct-segmentation-package"
VERSION = "1.6.0"
WHEEL_NAME = "liver_ct_segmentation_package-1.6.0-py3-none-any.whl"
REAL_SHA256 = "67ffa526d8500ce5e3d9f2c96c1690543d811d352d93d531301d35791b9d6bba"
SHAPE = (6, 7, 8)  # distinct sizes so a transposed axis changes the shape

# The machine's pip configuration (global constraint file, find-links, extra
# indexes) must not reach the fake index, and the fake wheel must not enter
# the user's pip cache.
ISOLATED_PIP = ("--isolated", "--no-cache-dir")


# -- Fake wheel ------------------------------------------------------------


def make_volume_pair() -> tuple[np.ndarray, np.ndarray]:
    """Return a seeded CT (float32 HU, quarter-HU steps) and a label map with two tumours."""
    rng = np.random.default_rng(117)
    ct = (rng.integers(-4000, 4000, size=SHAPE) / 4.0).astype(np.float32)
    label = np.zeros(SHAPE, dtype=np.uint16)
    label[1:5, 1:6, 1:7] = 1
    label[1:3, 1:3, 1:3] = 2
    label[4, 5, 6] = 2
    return ct, label


def mrc_bytes(array: np.ndarray, tmp_path: Path) -> bytes:
    path = tmp_path / "scratch.mrc"
    with mrcfile.new(path, data=array, overwrite=True):
        pass
    return path.read_bytes()


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(path: Path, members: dict[str, bytes]) -> Path:
    """Write a wheel with ``members`` plus the dist-info files pip reads."""
    dist_info = "liver_ct_segmentation_package-1.6.0.dist-info"
    files = dict(members)
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {VERSION}\nSummary: test fixture\n"
    ).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: srttt-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [record_line(name, data) for name, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def fake_wheel(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fake_wheel")
    ct, label = make_volume_pair()
    members = {IMAGE_MEMBER: mrc_bytes(ct, folder), LABEL_MEMBER: mrc_bytes(label, folder)}
    return write_wheel(folder / WHEEL_NAME, members)


# -- Local PEP 503 index ---------------------------------------------------


class IndexServer:
    """A simple index for one wheel on 127.0.0.1 that records the request paths."""

    def __init__(self, root: Path, wheel: Path):
        project = root / "simple" / PACKAGE
        project.mkdir(parents=True)
        (root / "files").mkdir()
        (root / "files" / wheel.name).write_bytes(wheel.read_bytes())
        (root / "simple" / "index.html").write_text(f'<a href="{PACKAGE}/">{PACKAGE}</a>\n')
        (project / "index.html").write_text(
            f'<a href="../../files/{wheel.name}#sha256={sha256_of(wheel)}">{wheel.name}</a>\n'
        )
        self.requests: list[str] = []
        handler = functools.partial(_RecordingHandler, self.requests, directory=str(root))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.index_url = f"http://127.0.0.1:{self._server.server_port}/simple/"

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, requests: list[str], *args, **kwargs):
        self._requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self._requests.append(self.path)
        super().do_GET()

    def log_message(self, format, *args):  # keep test output quiet
        pass


@pytest.fixture
def index_server(tmp_path, fake_wheel):
    server = IndexServer(tmp_path / "index", fake_wheel)
    yield server
    server.stop()


@pytest.fixture
def isolated_pip_config(monkeypatch):
    # pip reads the global config files even with --isolated, but os.devnull here skips them all.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def download(dest: Path, server: IndexServer, sha256: str, version: str = VERSION) -> Path:
    return download_wheel(
        dest, package=PACKAGE, version=version, sha256=sha256,
        index_url=server.index_url, timeout_s=60, pip_options=ISOLATED_PIP,
    )


# -- download_wheel ----------------------------------------------------------


def test_download_wheel_fetches_verified_file(tmp_path, fake_wheel, index_server, isolated_pip_config):
    wheel = download(tmp_path / "cache", index_server, sha256_of(fake_wheel))

    assert wheel == tmp_path / "cache" / WHEEL_NAME
    assert wheel.read_bytes() == fake_wheel.read_bytes()
    assert f"/files/{WHEEL_NAME}" in index_server.requests
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [WHEEL_NAME]


def test_download_wheel_wrong_sha256_leaves_no_file(tmp_path, fake_wheel, index_server, isolated_pip_config):
    wrong = "0" * 64
    actual = sha256_of(fake_wheel)

    with pytest.raises(FetchError, match=wrong) as error:
        download(tmp_path / "cache", index_server, wrong)

    assert actual in str(error.value)
    assert "deleted" in str(error.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_wheel_reuses_cache_offline(tmp_path, fake_wheel, index_server, isolated_pip_config):
    sha256 = sha256_of(fake_wheel)
    first = download(tmp_path / "cache", index_server, sha256)
    mtime = first.stat().st_mtime_ns
    index_server.stop()
    request_count = len(index_server.requests)

    second = download(tmp_path / "cache", index_server, sha256)

    assert second == first
    assert second.stat().st_mtime_ns == mtime
    assert len(index_server.requests) == request_count


def test_download_wheel_replaces_corrupt_cache(tmp_path, fake_wheel, index_server, isolated_pip_config):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / WHEEL_NAME).write_bytes(b"truncated download")

    wheel = download(cache, index_server, sha256_of(fake_wheel))

    assert sha256_of(wheel) == sha256_of(fake_wheel)
    assert f"/files/{WHEEL_NAME}" in index_server.requests


def test_download_wheel_reports_pip_failure(tmp_path, fake_wheel, index_server, isolated_pip_config):
    with pytest.raises(FetchError, match="failed with exit code") as error:
        download(tmp_path / "cache", index_server, sha256_of(fake_wheel), version="9.9.9")

    message = str(error.value)
    assert "9.9.9" in message
    assert "No matching distribution" in message
    assert index_server.index_url in message
    assert not list((tmp_path / "cache").glob("*.whl"))


# -- read_mrc_pair -----------------------------------------------------------


def test_read_mrc_pair_returns_stored_arrays(fake_wheel):
    ct, label = read_mrc_pair(fake_wheel)
    expected_ct, expected_label = make_volume_pair()

    assert ct.dtype == np.float32
    assert label.dtype == np.uint8
    assert ct.shape == SHAPE
    np.testing.assert_array_equal(ct, expected_ct)
    np.testing.assert_array_equal(label, expected_label)


@pytest.mark.parametrize("unsafe_name", ["../evil", "liver_ct_segmentation_package/../../evil", "/tmp/evil"])
def test_read_mrc_pair_rejects_unsafe_member(tmp_path, fake_wheel, unsafe_name):
    wheel = tmp_path / WHEEL_NAME
    with zipfile.ZipFile(fake_wheel) as source, zipfile.ZipFile(wheel, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
        target.writestr(zipfile.ZipInfo(unsafe_name), b"payload")

    with pytest.raises(FetchError, match="unsafe member path"):
        read_mrc_pair(wheel)


def test_read_mrc_pair_rejects_oversize_member(fake_wheel):
    with zipfile.ZipFile(fake_wheel) as archive:
        image_size = archive.getinfo(IMAGE_MEMBER).file_size

    with pytest.raises(FetchError, match="over the limit"):
        read_mrc_pair(fake_wheel, max_member_bytes=image_size - 1)


def test_read_mrc_pair_rejects_missing_member(tmp_path, fake_wheel):
    with zipfile.ZipFile(fake_wheel) as archive:
        wheel = write_wheel(tmp_path / WHEEL_NAME, {IMAGE_MEMBER: archive.read(IMAGE_MEMBER)})

    with pytest.raises(FetchError, match="no member"):
        read_mrc_pair(wheel)


def test_read_mrc_pair_rejects_unknown_label(tmp_path):
    ct, label = make_volume_pair()
    label[0, 0, 0] = 3
    members = {IMAGE_MEMBER: mrc_bytes(ct, tmp_path), LABEL_MEMBER: mrc_bytes(label, tmp_path)}
    wheel = write_wheel(tmp_path / WHEEL_NAME, members)

    with pytest.raises(FetchError, match=r"values \[0, 1, 2, 3\]"):
        read_mrc_pair(wheel)


def test_read_mrc_pair_rejects_non_zip(tmp_path):
    wheel = tmp_path / WHEEL_NAME
    wheel.write_bytes(b"not a zip archive")

    with pytest.raises(FetchError, match="cannot open"):
        read_mrc_pair(wheel)


# -- lits_to_msd -------------------------------------------------------------


def test_lits_to_msd_flips_to_ras():
    ct = np.zeros(SHAPE, dtype=np.float32)
    label = np.zeros(SHAPE, dtype=np.uint8)
    # Stored voxel (0, 0, 0) is the patient's right, anterior, inferior corner.
    ct[0, 0, 0] = 41.6
    label[0, 0, 0] = 2
    label[0, 0, 1] = 1

    ct_ras, tumour, liver, affine = lits_to_msd(ct, label, spacing_mm=(0.8, 0.9, 2.5))

    corner = (SHAPE[0] - 1, SHAPE[1] - 1, 0)
    assert ct_ras.dtype == np.int16
    assert ct_ras[corner] == 42
    assert tumour[corner] == 2
    assert liver[corner] == 1
    assert liver[corner[0], corner[1], 1] == 1
    assert tumour[corner[0], corner[1], 1] == 0
    np.testing.assert_array_equal(affine, np.diag([0.8, 0.9, 2.5, 1.0]))


def test_lits_to_msd_label_conventions():
    ct, label = make_volume_pair()

    ct_ras, tumour, liver, _ = lits_to_msd(ct, label)

    assert tumour.dtype == np.uint8
    assert liver.dtype == np.uint8
    assert set(np.unique(tumour).tolist()) == {0, 2}
    assert set(np.unique(liver).tolist()) == {0, 1}
    assert liver.sum() == np.count_nonzero(label >= 1)
    assert np.count_nonzero(tumour) == np.count_nonzero(label == 2)
    assert np.all(liver[tumour == 2] == 1)
    np.testing.assert_array_equal(ct_ras, np.rint(ct[::-1, ::-1, :]).astype(np.int16))


@pytest.mark.parametrize("spacing", [(1.5, 1.5), (1.5, 0.0, 1.5), (1.5, -1.0, 1.5), (1.5, float("nan"), 1.5)])
def test_lits_to_msd_rejects_invalid_spacing(spacing):
    ct, label = make_volume_pair()

    with pytest.raises(ValueError, match="spacing_mm"):
        lits_to_msd(ct, label, spacing_mm=spacing)


def test_lits_to_msd_rejects_values_outside_int16():
    ct, label = make_volume_pair()
    ct[0, 0, 0] = 40000.0

    with pytest.raises(ValueError, match="int16"):
        lits_to_msd(ct, label)


# -- fetch_lits_sample -------------------------------------------------------


def test_fetch_lits_sample_writes_nifti(tmp_path, fake_wheel, index_server, isolated_pip_config):
    spacing = (1.5, 1.25, 2.0)
    paths = {name: tmp_path / "out" / f"{name}.nii.gz" for name in ("image", "label", "liver")}

    summary = fetch_lits_sample(
        image_path=paths["image"], label_path=paths["label"], liver_path=paths["liver"],
        cache_dir=tmp_path / "cache", package=PACKAGE, version=VERSION, sha256=sha256_of(fake_wheel),
        spacing_mm=spacing, index_url=index_server.index_url, pip_options=ISOLATED_PIP,
    )

    ct, label = make_volume_pair()
    expected_label = label[::-1, ::-1, :]
    image, image_geometry = load_volume(paths["image"])
    tumour, tumour_geometry = load_volume(paths["label"])
    liver, liver_geometry = load_volume(paths["liver"])

    assert image.dtype == np.int16
    assert tumour.dtype == np.uint8
    assert liver.dtype == np.uint8
    assert image.shape == SHAPE
    assert image_geometry.orientation == "RAS"
    assert image_geometry.axial_axis() == 2
    np.testing.assert_allclose(image_geometry.spacing, spacing)
    assert tumour_geometry.matches(image_geometry)
    assert liver_geometry.matches(image_geometry)
    np.testing.assert_array_equal(image, np.rint(ct[::-1, ::-1, :]).astype(np.int16))
    np.testing.assert_array_equal(liver, (expected_label >= 1).astype(np.uint8))
    np.testing.assert_array_equal(tumour, np.where(expected_label == 2, 2, 0).astype(np.uint8))

    assert summary["shape"] == list(SHAPE)
    assert summary["spacing_mm"] == pytest.approx(spacing)
    assert summary["liver_voxels"] == np.count_nonzero(label >= 1)
    assert summary["tumour_voxels"] == np.count_nonzero(label == 2)
    assert summary["tumour_components"] == 2
    assert (tmp_path / "cache" / WHEEL_NAME).is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["image.nii.gz", "label.nii.gz", "liver.nii.gz"]


# -- Real wheel (only when a downloaded copy is named) -----------------------


@pytest.mark.skipif(
    not os.environ.get("SRTTT_LITS_WHEEL"),
    reason="set SRTTT_LITS_WHEEL to a downloaded liver-ct-segmentation-package 1.6.0 wheel to run",
)
def test_real_wheel_anatomy():
    wheel = Path(os.environ["SRTTT_LITS_WHEEL"])
    assert sha256_of(wheel) == REAL_SHA256

    ct, label = read_mrc_pair(wheel)
    ct_ras, tumour, liver, _ = lits_to_msd(ct, label)

    assert ct_ras.shape == (128, 128, 128)
    assert liver.sum() == 615351
    assert np.count_nonzero(tumour) == 130083
    assert ndimage.label(tumour)[1] == 79
    # RAS voxel order: the liver lies right of the spine (larger I) and
    # anterior to it (larger J). The spine is the largest connected region
    # above 300 HU below the liver dome (K < 100).
    bone, count = ndimage.label(ct_ras[:, :, :100] > 300)
    sizes = ndimage.sum_labels(bone > 0, bone, index=np.arange(1, count + 1))
    spine_centre = ndimage.center_of_mass(bone == np.argmax(sizes) + 1)
    liver_centre = ndimage.center_of_mass(liver)
    assert liver_centre[0] > spine_centre[0] + 20
    assert liver_centre[1] > spine_centre[1] + 20
