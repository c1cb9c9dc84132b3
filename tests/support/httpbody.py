"""Request bodies for the tests' own HTTP servers: git and the kubernetes client send chunked ones."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The whole body, chunked (as git's smart HTTP client and urllib3 stream it) or by Content-Length."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                handler.rfile.readline()
                break
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        return b"".join(chunks)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""
