"""A man-in-the-middle HTTP proxy in front of the test S3 server (moto): it forwards every request and lets a
test change what passes (flip a byte of an upload, refuse a header), as a faulty proxy or an older S3-compatible
store would. Used as ``AWS_ENDPOINT_URL`` so the code under test talks to it exactly as to MinIO."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


@dataclass
class Request:
    """One request as the proxy saw it: method, path (with query), headers (lower-case names), body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Proxy:
    """``url`` to point clients at; ``hook(request)`` may change ``request.body`` in place or return
    ``(status, body)`` to answer itself; ``seen`` lists every request."""

    url: str
    hook: Callable[[Request], tuple[int, bytes] | None] | None = None
    seen: list[Request] = field(default_factory=list)


@contextmanager
def s3_proxy(upstream: str) -> Iterator[Proxy]:
    target = urlparse(upstream)
    proxy = Proxy(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            req = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            proxy.seen.append(req)
            answer = proxy.hook(req) if proxy.hook else None
            if answer is not None:
                status, payload = answer
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length", "connection")}
            headers["Content-Length"] = str(len(req.body))
            conn.request(self.command, self.path, body=req.body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                    self.send_header(k, v)
            length = resp.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward  # noqa: N815 - http.server's names

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()


NOT_IMPLEMENTED = (501, b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NotImplemented</Code>"
                        b"<Message>A header you provided implies functionality that is not implemented</Message>"
                        b"</Error>")
