"""The demo's stand-in for a Slack incoming webhook: a tiny HTTP server on 127.0.0.1 that prints what it gets.

`reconciler demo` points the example upstream's (commented-out) Slack target of
`notifications.yaml` at it, so the tutorial's delivery news shows in the demo's output
as the team's chat would show it: one line per message, the message's fallback `text`.
It answers every POST with 200 and keeps the messages for the summary; nothing leaves
the machine.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 256 * 1024


class NewsReceiver:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
                body = self.rfile.read(length) if length > 0 else b""
                try:
                    message = json.loads(body)
                except ValueError:
                    message = {"text": body.decode("utf-8", "replace")[:200]}
                if not isinstance(message, dict):
                    message = {"text": str(message)[:200]}
                with receiver._lock:
                    receiver.messages.append(message)
                say(f"   chat ← {str(message.get('text') or message.get('title') or '')[:160]}")
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name="demo-news", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NewsReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def texts(self) -> list[str]:
        with self._lock:
            return [str(m.get("text") or "") for m in self.messages]


def enable_chat(notifications_yaml: str, url: str) -> str:
    """The example's notifications.yaml with its commented-out Slack target enabled and pointed at `url`."""
    lines: list[str] = []
    for line in notifications_yaml.splitlines():
        if line == "  targets: []":
            lines.append("  targets:")
        elif line.startswith("  #  "):
            lines.append("    " + line[len("  #  ") :])
        else:
            lines.append(line)
    text = "\n".join(lines) + "\n"
    return text.replace("https://hooks.slack.com/services/{{.env.slackToken}}", f"{url}/services/demo")
