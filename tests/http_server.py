"""A local HTTP file server with scriptable faults, for download tests.

``FileServer`` binds a ``ThreadingHTTPServer`` to 127.0.0.1 on a free port and
serves in-memory files by path. It honours ``Range: bytes=N-`` and
``bytes=N-M`` (206 with ``Content-Range``, 416 past the end) and records every
request, so a test can check that a resume really sent a Range header.

Faults are set per path with ``add(path, content, ...)``:

- ``fail_first``: reply to the first N requests with ``fail_status`` (503 by default).
- ``close_after_bytes`` with ``close_times``: on the first ``close_times`` requests
  that send a body, send only that many body bytes and close the connection.
- ``ignore_range``: always reply 200 with the whole file.
- ``served``: bytes to send in place of ``content`` (a corrupted mirror).

Example::

    with FileServer() as server:
        url = server.add("/data.tar", b"...", fail_first=2)
        ...
        assert [r.range for r in server.requests_for("/data.tar")] == [None, None, None]
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logger = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class ServedFile:
    """One path's content and the faults scripted for it."""

    content: bytes
    fail_first: int = 0
    fail_status: int = 503
    close_after_bytes: int | None = None
    close_times: int = 1
    ignore_range: bool = False
    served: bytes | None = None
    requests_seen: int = 0
    bodies_cut: int = 0


@dataclass(frozen=True)
class RequestRecord:
    """A request as the server saw it: path, Range header (None if absent) and the status sent."""

    path: str
    range: str | None
    status: int


@dataclass
class _State:
    files: dict[str, ServedFile] = field(default_factory=dict)
    requests: list[RequestRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
        state = self.server.state
        range_header = self.headers.get("Range")
        with state.lock:
            served = state.files.get(self.path)
            if served is not None:
                served.requests_seen += 1
                failing = served.requests_seen <= served.fail_first
        if served is None:
            self._reply_status(404, range_header)
            return
        if failing:
            self._reply_status(served.fail_status, range_header)
            return
        self._reply_file(served, range_header)

    def _reply_status(
        self, status: int, range_header: str | None, headers: dict[str, str] | None = None
    ) -> None:
        self._record(status, range_header)
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _reply_file(self, served: ServedFile, range_header: str | None) -> None:
        body = served.content if served.served is None else served.served
        size = len(body)
        start = 0
        match = _RANGE.match(range_header.strip()) if range_header and not served.ignore_range else None
        if match is not None:
            start = int(match.group(1))
            if start >= size:
                self._reply_status(416, range_header, {"Content-Range": f"bytes */{size}"})
                return
        end = min(int(match.group(2)), size - 1) if match is not None and match.group(2) else size - 1
        status = 206 if match is not None else 200

        self._record(status, range_header)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.wfile.write(body[start : end + 1][: self._body_limit(served)])

    def _body_limit(self, served: ServedFile) -> int | None:
        """Return how many body bytes to send before closing, or None for all of them."""
        if served.close_after_bytes is None:
            return None
        with self.server.state.lock:
            if served.bodies_cut >= served.close_times:
                return None
            served.bodies_cut += 1
        return served.close_after_bytes

    def _record(self, status: int, range_header: str | None) -> None:
        with self.server.state.lock:
            self.server.state.requests.append(RequestRecord(self.path, range_header, status))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base class)
        logger.debug("%s - %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _State) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class FileServer:
    """A threaded HTTP server on 127.0.0.1 serving in-memory files; use it as a context manager."""

    def __init__(self) -> None:
        self._state = _State()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FileServer:
        self._server = _Server(self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="test-http-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        """The server's root URL, such as ``http://127.0.0.1:41234``."""
        if self._server is None:
            raise RuntimeError("FileServer is not running; use it in a `with` block")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, content: bytes, **faults: object) -> str:
        """Serve ``content`` at ``path`` with the given ``ServedFile`` faults and return its URL."""
        if not path.startswith("/"):
            raise ValueError(f"path {path!r} must start with '/'")
        with self._state.lock:
            self._state.files[path] = ServedFile(content=content, **faults)
        return self.base_url + path

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of every request received so far, in arrival order."""
        with self._state.lock:
            return list(self._state.requests)

    def requests_for(self, path: str) -> list[RequestRecord]:
        """The requests received for ``path``, in arrival order."""
        return [record for record in self.requests if record.path == path]
