"""Resumable HTTP download with retries and md5 verification, standard library only.

The Medical Segmentation Decathlon archives are several gigabytes, so a broken
connection must not cost the bytes already received. ``download`` writes into
``<destination>.part``, resumes it with an HTTP ``Range`` request, retries
transient failures with exponential back-off and renames the part onto
``destination`` only after its md5 matches.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from tqdm import tqdm

logger = logging.getLogger(__name__)

USER_AGENT = "srttt-pipeline (urllib)"
MAX_BACKOFF_S = 300.0
_TRANSIENT_STATUSES = frozenset({408, 429})
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")


class DownloadError(RuntimeError):
    """A download failed for good: a bad URL, a non-transient HTTP status or too many retries."""


class ChecksumError(DownloadError):
    """A completed download does not have the expected md5 digest."""


class _TransientError(Exception):
    """A failure worth retrying: a network error, a timeout, a short body or HTTP 408/429/5xx."""


class _RangeNotSatisfiable(Exception):
    """HTTP 416 to a Range request: the part is as long as the file or longer."""

    def __init__(self, total: int | None) -> None:
        super().__init__(f"range not satisfiable, file size {total}")
        self.total = total


@dataclass(frozen=True)
class _Response:
    """The result of one GET: the open response, the byte offset its body starts at and the file size."""

    body: http.client.HTTPResponse
    start: int
    total: int | None


def file_digest(path: str | os.PathLike, algorithm: str = "md5", *, chunk_bytes: int = 1 << 20) -> str:
    """Return the hex digest of the file at ``path``, read in chunks of ``chunk_bytes``."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    destination: str | os.PathLike,
    *,
    md5: str | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    max_backoff_s: float = MAX_BACKOFF_S,
    timeout_s: float = 60.0,
    chunk_bytes: int = 1 << 20,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``destination`` and verify its md5; resume and retry on failure.

    Args:
        url: an ``http://`` or ``https://`` URL.
        destination: the final file. It appears only once complete and verified, by an
            atomic rename of ``<destination>.part``. Missing parent folders are created.
        md5: expected hex digest (any case). ``None`` skips verification.
        retries: how many times a transient failure is retried after the first attempt.
        backoff_s: the wait before retry ``n`` (0-based) is ``backoff_s * 2**n`` seconds,
            at most ``max_backoff_s``.
        timeout_s: socket timeout in seconds for the connection and for each read.
        chunk_bytes: read and write size in bytes.
        progress: show a tqdm bar in bytes.

    Returns:
        ``destination`` as a ``Path``. If it already exists and matches ``md5`` (or
        ``md5`` is None), it is returned without any request. An existing file with
        another md5 is downloaded again and replaced once the new copy is verified.

    Raises:
        ValueError: ``retries`` is negative or ``chunk_bytes`` is not positive.
        DownloadError: unsupported URL scheme, a non-transient HTTP status (404, 403...),
            or the retries are used up. The ``.part`` file is kept so that a rerun resumes.
        ChecksumError: the complete file has another md5. It is moved to
            ``<destination>.corrupt`` and ``destination`` is not written.
    """
    _check_url(url)
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries}")
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    destination = Path(destination)
    expected = md5.lower() if md5 else None
    if _is_present(destination, expected):
        return destination

    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, expected, timeout_s=timeout_s, chunk_bytes=chunk_bytes, progress=progress)
            break
        except _TransientError as error:
            received = _size(part)
            if attempt == retries:
                msg = (
                    f"Download of {url} failed after {retries + 1} attempts: {error}. "
                    f"{part} keeps the {received} bytes received; rerun to resume, or download the file "
                    f"by hand and point the source's `path` in params.yaml at it."
                )
                raise DownloadError(msg) from error
            wait_s = min(backoff_s * 2**attempt, max_backoff_s)
            logger.warning(
                "Download of %s failed (%s); retry %d of %d in %.2f s, resuming from byte %d",
                url, error, attempt + 1, retries, wait_s, received,
            )
            time.sleep(wait_s)

    _verify(part, destination, url, expected)
    os.replace(part, destination)
    logger.info("Downloaded %s to %s (%d bytes)", url, destination, destination.stat().st_size)
    return destination


def _check_url(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        msg = (
            f"Unsupported URL {url!r}: only http:// and https:// are downloaded. For a local copy, "
            f"set the source's `path` in params.yaml to the file instead of its URL."
        )
        raise DownloadError(msg)


def _is_present(destination: Path, expected: str | None) -> bool:
    """Return True when ``destination`` exists and has the expected digest (or none is expected)."""
    if not destination.is_file():
        return False
    if expected is None:
        logger.info("%s exists and no md5 is given; not downloading it again", destination)
        return True
    actual = file_digest(destination)
    if actual == expected:
        logger.info("%s exists with the expected md5 %s; not downloading it again", destination, expected)
        return True
    logger.warning(
        "%s exists but its md5 is %s, expected %s; downloading it again "
        "(the file stays until the new copy is verified)",
        destination, actual, expected,
    )
    return False


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _verify(part: Path, destination: Path, url: str, expected: str | None) -> None:
    """Move a part with the wrong md5 to ``<destination>.corrupt`` and raise ChecksumError."""
    if expected is None:
        return
    actual = file_digest(part)
    if actual == expected:
        return
    corrupt = destination.with_name(destination.name + ".corrupt")
    os.replace(part, corrupt)
    msg = (
        f"Checksum mismatch for {destination} downloaded from {url}: expected md5 {expected}, "
        f"got {actual}. The file was moved to {corrupt}; delete it and rerun. If this repeats, "
        f"the server holds a different file than the configured md5 (data.sources.<dataset>.md5 in "
        f"params.yaml or your config file) expects: check that md5 and the URL."
    )
    raise ChecksumError(msg)


# -- One attempt --------------------------------------------------------------


def _fetch(
    url: str, part: Path, expected: str | None, *, timeout_s: float, chunk_bytes: int, progress: bool
) -> None:
    """Bring ``part`` to the full file size with one GET; raise _TransientError to be retried."""
    offset = _size(part)
    try:
        response = _open(url, offset, timeout_s)
    except _RangeNotSatisfiable as unsatisfiable:
        if _part_is_complete(part, expected, unsatisfiable.total):
            logger.info("%s already contains all %d bytes of %s", part, offset, url)
            return
        logger.warning(
            "%s (%d bytes) is not a prefix of %s; restarting the download from zero", part, offset, url
        )
        part.unlink()
        offset = 0
        response = _open(url, offset, timeout_s)

    with response.body:
        if response.start != offset:
            logger.warning("%s ignored the Range request for byte %d; restarting from zero", url, offset)
        _stream(response, part, chunk_bytes=chunk_bytes, progress=progress)


def _open(url: str, offset: int, timeout_s: float) -> _Response:
    """Send the GET, with ``Range: bytes=<offset>-`` when ``offset`` is above 0.

    Raises _RangeNotSatisfiable on HTTP 416, which a request without Range cannot get.
    """
    headers = {"User-Agent": USER_AGENT}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        body = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset > 0:
            match = _UNSATISFIED_RANGE.match(error.headers.get("Content-Range", "").strip())
            raise _RangeNotSatisfiable(int(match.group(1)) if match else None) from error
        _raise_for_status(url, error.code, error.reason)
    except urllib.error.URLError as error:
        if isinstance(error.reason, ssl.SSLCertVerificationError):
            msg = (
                f"TLS certificate verification failed for {url}: {error.reason}. Check the URL in "
                f"params.yaml, or download the file by hand and point the source's `path` at it."
            )
            raise DownloadError(msg) from error
        raise _TransientError(f"connection failed: {error.reason}") from error
    except (http.client.HTTPException, OSError) as error:
        raise _TransientError(f"connection failed: {error!r}") from error

    try:
        start, total = _body_range(url, body, offset)
    except _TransientError:
        body.close()
        raise
    return _Response(body=body, start=start, total=total)


def _raise_for_status(url: str, status: int, reason: str) -> NoReturn:
    if status in _TRANSIENT_STATUSES or 500 <= status < 600:
        raise _TransientError(f"HTTP {status} {reason}")
    msg = (
        f"Download of {url} failed with HTTP {status} {reason}. Check the URL in params.yaml, or "
        f"download the file by hand and point the source's `path` at it."
    )
    raise DownloadError(msg)


def _body_range(url: str, body: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """Return the byte offset the body starts at and the file size (None if unknown).

    A 200 reply starts at 0 whatever Range was sent. A 206 reply must carry a
    ``Content-Range`` that starts at ``offset`` and agrees with ``Content-Length``.
    """
    length_header = body.headers.get("Content-Length")
    length = int(length_header) if length_header and length_header.isdigit() else None
    if body.status == 200:
        return 0, length
    if body.status != 206:
        raise _TransientError(f"unexpected HTTP {body.status} {body.reason}")

    content_range = body.headers.get("Content-Range", "")
    match = _CONTENT_RANGE.match(content_range.strip())
    if match is None:
        raise _TransientError(f"HTTP 206 with an invalid Content-Range {content_range!r}")
    first, last, total_text = match.groups()
    first, last = int(first), int(last)
    total = None if total_text == "*" else int(total_text)
    if first != offset:
        raise _TransientError(f"HTTP 206 starts at byte {first}, but byte {offset} was requested from {url}")
    if length is not None and length != last - first + 1:
        raise _TransientError(f"Content-Length {length} disagrees with Content-Range {content_range!r}")
    if total is not None and last != total - 1:
        raise _TransientError(f"Content-Range {content_range!r} does not reach the end of the file")
    return first, total


def _stream(response: _Response, part: Path, *, chunk_bytes: int, progress: bool) -> None:
    """Write the body into ``part``: append after ``response.start`` bytes, or truncate when it is 0."""
    mode = "ab" if response.start > 0 else "wb"
    received = response.start
    with (
        open(part, mode) as stream,
        tqdm(
            total=response.total,
            initial=received,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
        ) as bar,
    ):
        while True:
            try:
                chunk = response.body.read(chunk_bytes)
            except (http.client.HTTPException, OSError) as error:
                # Network errors only: a failed write below (such as a full disk) is not retried.
                raise _TransientError(f"connection lost after byte {received}: {error!r}") from error
            if not chunk:
                break
            stream.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))

    if response.total is not None and received != response.total:
        raise _TransientError(f"connection closed after {received} of {response.total} bytes")


def _part_is_complete(part: Path, expected: str | None, total: int | None) -> bool:
    """Decide, after HTTP 416, whether ``part`` already contains the whole file of ``total`` bytes.

    With an expected md5 the digest decides, because a size alone cannot tell a
    complete part from a wrong file of the same length. Without one, the size in
    the 416 reply's ``Content-Range: bytes */<size>`` must equal the part's size.
    """
    if expected is not None:
        return file_digest(part) == expected
    return total is not None and total == _size(part)
