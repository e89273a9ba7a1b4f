"""A loopback HTTP server for download tests: 127.0.0.1 only, Range support, and switches to misbehave.

Switches (attributes, change them between requests):
- drop_after=K, drop_requests=M: the first M requests send K body bytes, then the connection goes
  away (drop_mode "close": a clean FIN, a short body; "reset": a TCP RST);
- ignore_range: answer 200 with the whole file to range requests;
- fail_requests=N, fail_status=S: the first N requests get HTTP status S (e.g. 503);
- stall: seconds to wait after the headers before the body (client timeouts);
- content_length: None (the true length), an int (announce that, a lie), or "omit" (no header: the
  body ends when the connection closes);
- trailing: bytes sent after the file (counted in the true length);
- endless: after the file, send junk until the client goes away (no Content-Length);
- content_type / content_encoding: the headers to send ("application/gzip" / none);
- gzip_body: gzip the file once more on the fly (a server that double-encodes a .tar.gz);
- throttle: seconds to sleep between 16 KiB pieces of the body (slow mirrors, concurrent clients).
Every request is logged in `requests` as {"path", "range", "status"}.
"""

from __future__ import annotations

import gzip
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _log(self, status: int) -> None:
        with self.server.owner.lock:
            self.server.owner.requests.append({"path": self.path, "range": self.headers.get("Range"),
                                               "status": status})

    def do_GET(self) -> None:
        srv = self.server.owner
        with srv.lock:
            index = srv.served
            srv.served += 1
        if index < srv.fail_requests:
            self._log(srv.fail_status)
            self.send_error(srv.fail_status)
            return
        data = srv.files.get(self.path)
        if data is None:
            self._log(404)
            self.send_error(404)
            return
        if srv.gzip_body:
            data = gzip.compress(data, compresslevel=1, mtime=0)
        data += srv.trailing
        start, end, status = 0, len(data) - 1, 200
        wanted = self.headers.get("Range")
        if wanted and not srv.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if m:
                start = int(m.group(1))
                end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
                if start >= len(data):
                    self._log(416)
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        body = data[start:end + 1]
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", srv.content_type)
        if srv.content_encoding:
            self.send_header("Content-Encoding", srv.content_encoding)
        if srv.content_length != "omit" and not srv.endless:
            self.send_header("Content-Length", str(len(body) if srv.content_length is None else srv.content_length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if srv.stall:
            time.sleep(srv.stall)
        if srv.drop_after is not None and index < srv.fail_requests + srv.drop_requests:
            self.wfile.write(body[:srv.drop_after])
            self.wfile.flush()
            if srv.drop_mode == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        try:
            if srv.throttle:
                for i in range(0, len(body), 1 << 14):
                    self.wfile.write(body[i:i + (1 << 14)])
                    self.wfile.flush()
                    time.sleep(srv.throttle)
            else:
                self.wfile.write(body)
            junk = b"\xa5" * (1 << 16)
            while srv.endless:  # until the client hangs up
                self.wfile.write(junk)
                with srv.lock:
                    srv.endless_sent += len(junk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # dropped clients are the point
        pass


class LoopbackServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.served = 0
        self.drop_after: int | None = None
        self.drop_requests = 0
        self.drop_mode = "close"
        self.ignore_range = False
        self.fail_requests = 0
        self.fail_status = 503
        self.stall = 0.0
        self.content_length: int | str | None = None
        self.trailing = b""
        self.endless = False
        self.endless_sent = 0
        self.content_type = "application/gzip"
        self.content_encoding: str | None = None
        self.gzip_body = False
        self.throttle = 0.0
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)

    def __enter__(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def refused_url() -> str:
    """A loopback URL nobody listens on (the port was just free)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-binary.tar.gz"


@pytest.fixture
def loopback(monkeypatch):
    """A running LoopbackServer; proxies are switched off so 127.0.0.1 is reached directly, retries are fast."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATAKIT_FETCH_BACKOFF", "0.01")
    with LoopbackServer() as server:
        yield server
