"""A real HTTP receiver of webhooks for the tests: it listens on 127.0.0.1, keeps every request
it gets (with the wall-clock time it arrived), and answers as its path says:

- `/ok…`: 200 at once;
- `/flaky…`: 500 to the first two POSTs of each `webhook-id`, then 200;
- `/slow…`: 200 after 0.3 s;
- `/hang…`: no answer for 30 s (longer than the dispatcher waits).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived
    status: int  # what the receiver answered (0: it hung)

    @property
    def payload(self) -> dict[str, Any]:
        return orjson.loads(self.body)  # type: ignore[no-any-return]

    @property
    def member(self) -> str:
        return str(self.payload["data"]["member_id"])


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.seen: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                at = time.time()
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                status = receiver.answer(self.path, headers.get("webhook-id", ""))
                if status == 0:
                    receiver.keep(Request(self.path, headers, body, at, 0))
                    time.sleep(30)
                    return
                if self.path.startswith("/slow"):
                    time.sleep(0.3)
                receiver.keep(Request(self.path, headers, body, at, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path: str, webhook_id: str) -> int:
        with self.lock:
            self.seen[(path, webhook_id)] += 1
            tries = self.seen[(path, webhook_id)]
        if path.startswith("/hang"):
            return 0
        if path.startswith("/flaky") and tries <= 2:
            return 500
        return 200

    def keep(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def got(self, path: str, members: set[str] | None = None, status: int | None = 200) -> list[Request]:
        """The requests to `path` (about `members`, answered `status`), in the order they arrived."""
        with self.lock:
            requests = [r for r in self.requests if r.path == path]
        return [
            r
            for r in sorted(requests, key=lambda r: r.at)
            if (status is None or r.status == status) and (members is None or r.member in members)
        ]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
