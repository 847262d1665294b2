"""A counting, fault-injecting HTTP proxy on 127.0.0.1 in front of the S3 test server.

Every request is forwarded to the server (``upstream``, a loopback URL) and counted by
method. With ``fail_one_in=N`` a seeded random 1 in N requests fails instead: answered
with HTTP 503 (SlowDown), its connection reset before any answer, or (for a GET) cut
in the middle of the body -- what a real object store does under load. A GET of a key
ending with one of ``broken`` always gets 503 (a file listed and sized, then unreadable); a HEAD or
GET of a key ending with one of ``vanished`` gets 404 although listings still show it
(deleted after it was listed). With ``latency_s`` every request waits that long before it
is forwarded: the round trip of a real object store. Point ``AWS_ENDPOINT_URL`` (or ``storage.endpoint_url``)
at ``proxy.endpoint`` to route a job through it.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

FAULTS = ("503", "reset", "cut")
_SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
              b"<Message>Please reduce your request rate.</Message></Error>")


_NO_SUCH_KEY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
                b"<Message>The specified key does not exist.</Message></Error>")


class S3Proxy:
    def __init__(self, upstream: str, fail_one_in: int = 0, seed: int = 0, faults: tuple[str, ...] = FAULTS,
                 latency_s: float = 0.0):
        parsed = urlparse(upstream)
        if parsed.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the proxy only forwards to loopback, not {upstream}")
        self.upstream = (parsed.hostname, parsed.port)
        self.fail_one_in, self.faults, self.latency_s = fail_one_in, faults, latency_s
        self.broken: tuple[str, ...] = ()
        self.vanished: tuple[str, ...] = ()
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: Counter = Counter()  # method -> requests answered by the server
        self.failed: Counter = Counter()  # fault kind -> requests failed on purpose
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.server.handle_error = lambda *args: None  # a client that hung up on a failed request is expected
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "S3Proxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "S3Proxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_counts(self) -> dict[str, int]:
        """The counts so far (method -> requests), then start again from zero."""
        with self.lock:
            counts = dict(self.requests)
            self.requests.clear()
        return counts

    def _draw_fault(self, method: str, path: str) -> str | None:
        key = path.split("?", 1)[0]
        with self.lock:
            if self.broken and method == "GET" and key.endswith(self.broken):
                self.failed["broken"] += 1
                return "503"
            if self.vanished and method in ("HEAD", "GET") and key.endswith(self.vanished):
                self.failed["vanished"] += 1
                return "404"
            if not self.fail_one_in or self.random.randrange(self.fail_one_in):
                self.requests[method] += 1
                return None
            kinds = [f for f in self.faults if f != "cut" or method == "GET"] or ["503"]
            kind = self.random.choice(kinds)
            self.failed[kind] += 1
            return kind

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                """The request body as sent: a chunked body keeps its framing (the SDK's
                aws-chunked uploads are read by the server in that very framing)."""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    raw = []
                    while True:
                        line = self.rfile.readline()
                        raw.append(line)
                        size = int(line.split(b";")[0].strip(), 16)
                        if size == 0:
                            while True:
                                trailer = self.rfile.readline()
                                raw.append(trailer)
                                if not trailer.strip():
                                    return b"".join(raw)
                        raw.append(self.rfile.read(size + 2))  # data and its CRLF
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends RST, as a dropped connection does
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def _forward(self) -> None:
                body = self._body()
                if proxy.latency_s:
                    time.sleep(proxy.latency_s)
                fault = proxy._draw_fault(self.command, self.path)
                if fault == "404":
                    body = b"" if self.command == "HEAD" else _NO_SUCH_KEY
                    self.send_response(404)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if fault == "reset":
                    self._reset()
                    return
                if fault == "503":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(_SLOW_DOWN)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for key, value in self.headers.items():
                        if key.lower() != "expect":
                            conn.putheader(key, value)
                    conn.endheaders(body if body else None)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                self.send_response(response.status, response.reason)
                skip = ("transfer-encoding", "connection", "server", "date")
                if self.command != "HEAD":  # a HEAD answer's length is the object's, not its (empty) body's
                    skip += ("content-length",)
                    self.send_header("Content-Length", str(len(data)))
                for key, value in response.getheaders():
                    if key.lower() not in skip:
                        self.send_header(key, value)
                self.end_headers()
                if self.command == "HEAD":
                    return
                if fault == "cut" and len(data) > 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self._reset()
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler


def requests_per_step(proxy: "S3Proxy") -> dict[str, Counter]:
    """Wrap the kernel's step runner so the proxy's counts are read after every step."""
    from pipeline.kernel import TaskRunner

    per_step: dict[str, Counter] = {}
    original = TaskRunner.run

    def counted(self, name, *args, **kwargs):
        per_step.setdefault("driver", Counter()).update(proxy.reset_counts())  # what the driver did before
        try:
            return original(self, name, *args, **kwargs)
        finally:
            per_step.setdefault(name, Counter()).update(proxy.reset_counts())

    TaskRunner.run = counted
    return per_step  # filled as the job runs
