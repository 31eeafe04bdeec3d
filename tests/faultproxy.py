"""A small TCP/HTTP fault proxy for tests: localhost only, bounded, thread per connection.

Sits between a client (boto3, azure-core) and a local emulator and applies one planned
fault per incoming connection, in order; connections past the plan are passed through.
The emulators used here (moto server, Azurite) answer one request per connection or keep
connections alive; faults are per connection, which is what a client sees anyway.

Faults:
  ``pass``            forward both ways untouched
  ``reset``           read a little of the request, then reset the connection (RST)
  ``drop_response``   forward the request, let the server answer, discard the answer and
                      reset the client: the server did the work, the client never hears
  ``delay:SECONDS``   wait before forwarding (provokes client read timeouts)
  ``status:CODE:ERR`` answer an HTTP error (e.g. ``status:503:SlowDown``) without
                      contacting the server, as a throttling or failing front end would
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import Counter, deque

MAX_CONNECTIONS = 256  # bound: a runaway client loop cannot make the proxy spawn forever
IO_TIMEOUT = 30.0


def _rst_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _read_http_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read up to the end of the request headers; return (head, any body bytes read)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > 1 << 20:
            break
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._plan: deque[str] = deque()
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.connections = 0
        self._stop = threading.Event()
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(64)
        self._srv.settimeout(0.2)
        self.port = self._srv.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)
        self._thread.start()

    def plan(self, *faults: str) -> None:
        with self._lock:
            self._plan.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self._plan.clear()

    def pending(self) -> int:
        with self._lock:
            return len(self._plan)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._srv.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                fault = self._plan.popleft() if self._plan else "pass"
                self.connections += 1
                over = self.connections > MAX_CONNECTIONS
            if over:
                _rst_close(client)
                continue
            self.stats[fault.split(":")[0]] += 1
            threading.Thread(target=self._handle, args=(client, fault), daemon=True).start()

    def _handle(self, client: socket.socket, fault: str) -> None:
        client.settimeout(IO_TIMEOUT)
        try:
            kind, _, arg = fault.partition(":")
            if kind == "reset":
                with contextlib.suppress(OSError):
                    client.recv(1024)
                _rst_close(client)
                return
            if kind == "status":
                self._answer_status(client, arg)
                return
            if kind == "delay":
                time.sleep(float(arg))
            upstream = socket.create_connection(self.target, timeout=IO_TIMEOUT)
            self._pipe(client, upstream, drop_response=(kind == "drop_response"))
        except OSError:
            _rst_close(client)

    def _answer_status(self, client: socket.socket, arg: str) -> None:
        code_s, _, err = arg.partition(":")
        code = int(code_s)
        err = err or "ServiceUnavailable"
        head, rest = _read_http_head(client)
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
        # With "Expect: 100-continue" the client waits for us before sending the body, so a
        # final answer can go straight away; otherwise drain the body first so the client
        # does not see a broken pipe instead of our answer.
        if b"100-continue" not in headers.get(b"expect", b"").lower():
            remaining = int(headers.get(b"content-length", b"0") or 0) - len(rest)
            while remaining > 0:
                chunk = client.recv(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{err}</Code>'
                f"<Message>injected by faultproxy</Message></Error>").encode()
        reason = {503: "Service Unavailable", 500: "Internal Server Error", 403: "Forbidden",
                  400: "Bad Request"}.get(code, "Error")
        resp = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\n"
                f"x-ms-error-code: {err}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        with contextlib.suppress(OSError):
            client.sendall(resp)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            client.close()

    def _pipe(self, client: socket.socket, upstream: socket.socket, drop_response: bool) -> None:
        upstream.settimeout(IO_TIMEOUT)
        done = threading.Event()

        def c2s() -> None:
            try:
                while chunk := client.recv(1 << 16):
                    upstream.sendall(chunk)
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            finally:
                done.set()

        t = threading.Thread(target=c2s, daemon=True)
        t.start()
        pending = b""
        final = False
        try:
            while chunk := upstream.recv(1 << 16):
                if not drop_response:
                    client.sendall(chunk)
                    continue
                if final:
                    continue
                pending += chunk
                # Interim "100 Continue" answers are passed on (the client waits for them
                # before sending a body); the final answer is swallowed.
                while pending.startswith(b"HTTP/1.1 100") and b"\r\n\r\n" in pending:
                    head, _, pending = pending.partition(b"\r\n\r\n")
                    client.sendall(head + b"\r\n\r\n")
                if len(pending) >= 12 and not pending.startswith(b"HTTP/1.1 100"):
                    # The server has answered: it processed the request.  Read on briefly
                    # so the whole answer is consumed, then cut the client off.
                    final = True
                    upstream.settimeout(0.5)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.close()
            if drop_response:
                _rst_close(client)
            else:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    client.close()
            t.join(timeout=2)
