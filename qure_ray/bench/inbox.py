"""`ResultInbox`: the benchmark's webhook receiver, so that end-to-end clients learn a result is final the way a
partner does, from the platform's signed webhook, instead of polling `GET /results`.

Polling every half second gave latencies a half-second resolution, and polling faster measured the clients: on a
small machine their lookups take the CPU the pipeline needs. A webhook arrives as soon as the catalog records the
result (`WebhookNotifier.listen`); the client then asks `GET /results` once, for the 200 the benchmark counts.

The receiver is the standard library's threaded HTTP server on 127.0.0.1 (the platform must be told it may call
loopback: `QURE_WEBHOOK_ALLOWED_NETWORKS=127.0.0.1/32`). Clients wait on their own event loops: an arrival
resolves the waiting client's future on that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from qure_ray.client.webhooks import SIGNATURE_HEADER, WebhookSignatureError, ascii_digits, verify_signature

MAX_BODY_BYTES = 65536
"""A notification is a few hundred bytes of UIDs and status."""


class ResultInbox:
    """Serves on 127.0.0.1 inside its `with` block (`with ResultInbox(secret) as inbox: ...`)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.refused = 0
        """Requests that were not a notification signed with `secret`."""
        self._lock = threading.Lock()
        self._arrived: set[str] = set()
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/results-final"

    def __enter__(self) -> ResultInbox:
        threading.Thread(target=self._server.serve_forever, name="result-inbox", daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def receive(self, body: bytes, signature: str) -> int:
        """One POST to the inbox; returns the HTTP status to answer (204, or 400/401 for what is refused)."""
        try:
            verify_signature(body, signature, self.secret)
            notification = json.loads(body)
            uid = str(notification.get("sop_instance_uid") or notification["series_instance_uid"])
        except WebhookSignatureError:
            self.refused += 1
            return 401
        except (ValueError, KeyError, TypeError, AttributeError):
            self.refused += 1
            return 400
        with self._lock:
            self._arrived.add(uid)
            waiting = self._waiting.pop(uid, None)
        if waiting is not None:
            loop, future = waiting
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(_resolve, future)
        return 204

    async def wait(self, uid: str, *, timeout_s: float) -> None:
        """Return once the webhook of `uid`'s final result has arrived (perhaps before this was called)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if uid in self._arrived:
                return
            self._waiting[uid] = (loop, future)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise RuntimeError(
                f"no webhook for {uid} within {timeout_s:g} s at {self.url} ({self.refused} requests refused): see "
                "the platform's webhook_deliveries table for what its attempts met"
            ) from None
        finally:
            with self._lock:
                self._waiting.pop(uid, None)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # its wait may have timed out meanwhile
        future.set_result(None)


def _handler(inbox: ResultInbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # the platform's client keeps its connection

        def do_POST(self) -> None:
            declared = self.headers.get("Content-Length", "")
            length = int(declared) if ascii_digits(declared) else -1
            if length < 0 or length > MAX_BODY_BYTES:  # no, a bad or a too large length: the body is not read
                status = 411 if not declared else 400 if length < 0 else 413
                self.close_connection = True
            else:
                status = inbox.receive(self.rfile.read(length), self.headers.get(SIGNATURE_HEADER, ""))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per result on stderr would drown the benchmark's own output

    return Handler
