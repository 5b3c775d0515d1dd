"""A webhook receiver: verifies each POST's Standard Webhooks signature, acts once per
`webhook-id`, and forgets an erased member.

The action here stores each event as a row of a SQLite database (RECEIVER_DB), standing in
for a chat message or a CRM update. It needs only the standard library and `standardwebhooks`;
see README.md beside it for what it shows.

    WEBHOOK_SECRET=whsec_… RECEIVER_DB=events.sqlite RECEIVER_PORT=8010 python receiver.py
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

ERASED = "community.member.erased"


class Inbox:
    """The action and its own record of what it did, in one SQLite transaction: an event's row
    is keyed by its webhook-id, so a redelivery finds its row and is not acted on twice."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")  # answered 2xx only once it is on disk
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS events (webhook_id TEXT PRIMARY KEY, member_id TEXT NOT NULL,"
            " type TEXT NOT NULL, data TEXT NOT NULL)"
        )
        self.lock = threading.Lock()  # requests come on threads; one transaction at a time

    def take(self, webhook_id: str, event: dict[str, Any]) -> bool:
        """Act on an event unless it was acted on before; True if it was new."""
        member_id = event["data"]["member_id"]
        with self.lock, self.db:  # `with db`: commit, or roll back on an exception
            self.db.execute("BEGIN IMMEDIATE")
            if event["type"] == ERASED:
                # Forget the member, the ids of their events too: a later member of the same id
                # counts its seq from 1 again, so its event ids repeat the erased member's.
                return self.db.execute("DELETE FROM events WHERE member_id = ?", (member_id,)).rowcount > 0
            inserted = self.db.execute(
                "INSERT INTO events (webhook_id, member_id, type, data) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (webhook_id) DO NOTHING",
                (webhook_id, member_id, event["type"], json.dumps(event["data"])),
            )
            return inserted.rowcount == 1


def handler(verifier: Webhook, inbox: Inbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            try:
                # Checks the signature over id, timestamp and body, and that the timestamp is
                # within 5 minutes (each attempt is signed afresh); returns the parsed body.
                event = verifier.verify(body, dict(self.headers.items()))
            except WebhookVerificationError as exc:
                # A 4xx is not retried: a request we cannot trust is refused for good.
                return self.answer(401, f"not verified: {exc}")
            new = inbox.take(self.headers["webhook-id"], event)  # an exception answers 500: retried
            self.answer(200, "done" if new else "already done")

        def answer(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
            pass

    return Handler


def main() -> None:
    inbox = Inbox(os.environ.get("RECEIVER_DB", "events.sqlite"))
    verifier = Webhook(os.environ["WEBHOOK_SECRET"])  # as `cl webhook add` printed it
    address = (os.environ.get("RECEIVER_HOST", "127.0.0.1"), int(os.environ.get("RECEIVER_PORT", "8010")))
    server = ThreadingHTTPServer(address, handler(verifier, inbox))
    # shutdown() waits for serve_forever() to return, so it is called from another thread.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"listening on http://{address[0]}:{server.server_address[1]}", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
