"""Download tests against a real HTTP server on 127.0.0.1 (tests/http_server.py)."""

from __future__ import annotations

import hashlib
import logging
import random

import pytest
from http_server import FileServer

from srttt.data.download import ChecksumError, DownloadError, download, file_digest

SIZE = 300_000
CHUNK = 16 * 1024
FAST = {"backoff_s": 0.01, "timeout_s": 5.0, "chunk_bytes": CHUNK, "progress": False}


@pytest.fixture
def server():
    with FileServer() as running:
        yield running


@pytest.fixture
def payload() -> bytes:
    return random.Random(20220608).randbytes(SIZE)


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_file_digest_matches_hashlib(tmp_path, payload):
    path = tmp_path / "blob.bin"
    path.write_bytes(payload)

    assert file_digest(path, chunk_bytes=1000) == md5_of(payload)
    assert file_digest(path, "sha256") == hashlib.sha256(payload).hexdigest()


def test_download_full_file_verified(tmp_path, server, payload):
    url = server.add("/Task08_HepaticVessel.tar", payload)
    destination = tmp_path / "raw" / "msd" / "Task08_HepaticVessel.tar"

    result = download(url, destination, md5=md5_of(payload).upper(), **FAST)

    assert result == destination
    assert destination.read_bytes() == payload
    assert not destination.with_name(destination.name + ".part").exists()
    assert [r.range for r in server.requests_for("/Task08_HepaticVessel.tar")] == [None]


def test_download_resumes_after_connection_closed(tmp_path, server, payload):
    cut = 100_000
    url = server.add("/task.tar", payload, close_after_bytes=cut)
    destination = tmp_path / "task.tar"

    download(url, destination, md5=md5_of(payload), **FAST)

    assert destination.read_bytes() == payload
    records = server.requests_for("/task.tar")
    assert [r.range for r in records] == [None, f"bytes={cut}-"]
    assert [r.status for r in records] == [200, 206]


def test_download_resumes_across_several_cuts(tmp_path, server, payload):
    url = server.add("/task.tar", payload, close_after_bytes=70_000, close_times=3)
    destination = tmp_path / "task.tar"

    download(url, destination, md5=md5_of(payload), **FAST)

    assert destination.read_bytes() == payload
    ranges = [r.range for r in server.requests_for("/task.tar")]
    assert ranges == [None, "bytes=70000-", "bytes=140000-", "bytes=210000-"]


def test_download_restarts_when_range_ignored(tmp_path, server, payload):
    url = server.add("/task.tar", payload, close_after_bytes=50_000, ignore_range=True)
    destination = tmp_path / "task.tar"

    download(url, destination, md5=md5_of(payload), **FAST)

    assert destination.read_bytes() == payload
    records = server.requests_for("/task.tar")
    assert [r.range for r in records] == [None, "bytes=50000-"]
    assert [r.status for r in records] == [200, 200]


def test_download_retries_503_then_succeeds(tmp_path, server, payload, caplog):
    url = server.add("/task.tar", payload, fail_first=2)
    destination = tmp_path / "task.tar"

    with caplog.at_level(logging.WARNING, logger="srttt.data.download"):
        download(url, destination, md5=md5_of(payload), **FAST)

    assert destination.read_bytes() == payload
    assert [r.status for r in server.requests_for("/task.tar")] == [503, 503, 200]
    retry_logs = [record for record in caplog.records if "retry" in record.getMessage()]
    assert len(retry_logs) == 2
    assert "HTTP 503" in retry_logs[0].getMessage()


def test_download_gives_up_after_retries(tmp_path, server, payload):
    url = server.add("/task.tar", payload, fail_first=10)
    destination = tmp_path / "task.tar"

    with pytest.raises(DownloadError, match="after 3 attempts") as caught:
        download(url, destination, retries=2, **FAST)

    assert "HTTP 503" in str(caught.value)
    assert len(server.requests_for("/task.tar")) == 3
    assert not destination.exists()


def test_download_404_raises_without_retry(tmp_path, server):
    url = server.base_url + "/missing/Task03_Liver.tar"
    destination = tmp_path / "Task03_Liver.tar"

    with pytest.raises(DownloadError) as caught:
        download(url, destination, retries=5, **FAST)

    message = str(caught.value)
    assert url in message
    assert "HTTP 404" in message
    assert "params.yaml" in message
    assert not isinstance(caught.value, ChecksumError)
    assert len(server.requests) == 1
    assert not destination.exists()


def test_download_corrupted_body_raises_checksum_error(tmp_path, server, payload):
    corrupted = bytearray(payload)
    corrupted[12_345] ^= 0xFF
    url = server.add("/task.tar", payload, served=bytes(corrupted))
    destination = tmp_path / "task.tar"
    expected = md5_of(payload)
    actual = md5_of(bytes(corrupted))

    with pytest.raises(ChecksumError) as caught:
        download(url, destination, md5=expected, **FAST)

    message = str(caught.value)
    assert expected in message
    assert actual in message
    corrupt = tmp_path / "task.tar.corrupt"
    assert corrupt.read_bytes() == bytes(corrupted)
    assert not destination.exists()
    assert not (tmp_path / "task.tar.part").exists()


def test_download_replaces_older_corrupt_file(tmp_path, server, payload):
    url = server.add("/task.tar", payload, served=payload[::-1])
    destination = tmp_path / "task.tar"
    (tmp_path / "task.tar.corrupt").write_bytes(b"from an earlier run")

    with pytest.raises(ChecksumError):
        download(url, destination, md5=md5_of(payload), **FAST)

    assert (tmp_path / "task.tar.corrupt").read_bytes() == payload[::-1]


def test_download_skips_verified_existing_file(tmp_path, server, payload):
    url = server.add("/task.tar", payload)
    destination = tmp_path / "task.tar"
    destination.write_bytes(payload)

    download(url, destination, md5=md5_of(payload), **FAST)
    download(url, destination, md5=None, **FAST)

    assert server.requests == []


def test_download_replaces_existing_file_with_wrong_md5(tmp_path, server, payload):
    url = server.add("/task.tar", payload)
    destination = tmp_path / "task.tar"
    destination.write_bytes(b"stale")

    download(url, destination, md5=md5_of(payload), **FAST)

    assert destination.read_bytes() == payload
    assert len(server.requests) == 1


def test_download_resumes_part_from_killed_run(tmp_path, server, payload):
    url = server.add("/task.tar", payload)
    destination = tmp_path / "task.tar"
    (tmp_path / "task.tar.part").write_bytes(payload[:123_456])

    download(url, destination, md5=md5_of(payload), **FAST)

    assert destination.read_bytes() == payload
    records = server.requests_for("/task.tar")
    assert [r.range for r in records] == ["bytes=123456-"]
    assert [r.status for r in records] == [206]


def test_download_complete_part_answered_416(tmp_path, server, payload):
    url = server.add("/task.tar", payload)
    destination = tmp_path / "task.tar"
    (tmp_path / "task.tar.part").write_bytes(payload)

    download(url, destination, md5=None, **FAST)

    assert destination.read_bytes() == payload
    assert [r.status for r in server.requests_for("/task.tar")] == [416]


def test_download_complete_part_verified_by_md5(tmp_path, server, payload):
    url = server.add("/task.tar", payload)
    destination = tmp_path / "task.tar"
    (tmp_path / "task.tar.part").write_bytes(payload)

    download(url, destination, md5=md5_of(payload), **FAST)

    assert destination.read_bytes() == payload
    assert [r.status for r in server.requests_for("/task.tar")] == [416]


def test_download_oversized_part_restarts_without_md5(tmp_path, server, payload):
    url = server.add("/task.tar", payload)
    destination = tmp_path / "task.tar"
    (tmp_path / "task.tar.part").write_bytes(payload + b"x")

    download(url, destination, md5=None, **FAST)

    assert destination.read_bytes() == payload
    assert [r.status for r in server.requests_for("/task.tar")] == [416, 200]


def test_download_oversized_part_restarts(tmp_path, server, payload):
    url = server.add("/task.tar", payload)
    destination = tmp_path / "task.tar"
    (tmp_path / "task.tar.part").write_bytes(payload + b"trailing garbage")

    download(url, destination, md5=md5_of(payload), **FAST)

    assert destination.read_bytes() == payload
    records = server.requests_for("/task.tar")
    assert [r.status for r in records] == [416, 200]
    assert records[1].range is None


def test_download_rejects_non_http_url(tmp_path):
    with pytest.raises(DownloadError, match="only http:// and https://"):
        download("ftp://example.org/Task03_Liver.tar", tmp_path / "x.tar", **FAST)


def test_download_connection_refused_retries(tmp_path):
    # Bind and close a server to get a local port that nothing listens on.
    with FileServer() as stopped:
        url = stopped.base_url + "/task.tar"

    with pytest.raises(DownloadError, match="after 2 attempts"):
        download(url, tmp_path / "task.tar", retries=1, **FAST)


@pytest.mark.parametrize("option", [{"retries": -1}, {"chunk_bytes": 0}])
def test_download_invalid_option_raises(tmp_path, option):
    options = {**FAST, **option}

    with pytest.raises(ValueError, match=str(next(iter(option.values())))):
        download("http://127.0.0.1:9/task.tar", tmp_path / "task.tar", **options)
