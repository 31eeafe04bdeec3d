"""A switchable HTTP gate in front of a local emulator, for fault tests of the shipper.

Per request (moto's server closes every connection after answering, so each connection
carries one request), by mode:
  ``pass``   forward both ways
  ``reset``  read the request head, then reset the connection (cold storage "down")
  ``hang``   read the request and never answer, holding the connection open (a frozen service)
and, whatever the mode, a request whose request line contains one of ``hang_matching``
hangs, and ``rewrite`` pairs (same length, so Content-Length holds) are applied to every
forwarded request head, as a misconfigured front end or bucket policy would.  ``hung``
counts requests being held.  Bounded: at most MAX_CONNECTIONS at a time.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

MAX_CONNECTIONS = 128
IO_TIMEOUT = 30.0


def _read_head(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) < 1 << 20:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def _rst(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class Gate:
    def __init__(self, target_host: str, target_port: int, mode: str = "pass") -> None:
        self.target = (target_host, target_port)
        self.mode = mode
        self.hang_matching: list[str] = []
        self.rewrite: list[tuple[bytes, bytes]] = []
        self.hung = 0
        self.requests: list[bytes] = []  # request lines seen
        self._lock = threading.Lock()
        self._open = 0
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(128)
        self._srv.settimeout(0.2)
        self.port = self._srv.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept_loop, name="gate", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._srv.close()
        self.release()

    def release(self) -> None:
        """Reset every held (hanging) connection."""
        with self._lock:
            held, self._held = self._held, []
        for s in held:
            _rst(s)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                over = self._open >= MAX_CONNECTIONS
                if not over:
                    self._open += 1
            if over:
                _rst(client)
                continue
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        try:
            client.settimeout(IO_TIMEOUT)
            head = _read_head(client)
            line = head.split(b"\r\n", 1)[0]
            with self._lock:
                self.requests.append(line)
                mode = self.mode
            if mode == "hang" or any(m.encode() in line for m in self.hang_matching):
                self._hold(client)
                return
            if mode == "reset":
                _rst(client)
                return
            upstream = socket.create_connection(self.target, timeout=IO_TIMEOUT)
            for old, new in list(self.rewrite):
                assert len(old) == len(new)
                head = head.replace(old, new)
            upstream.sendall(head)
            self._pipe(client, upstream)
        except OSError:
            _rst(client)
        finally:
            with self._lock:
                self._open -= 1

    def _hold(self, client: socket.socket) -> None:
        with self._lock:
            self.hung += 1
            self._held.append(client)
        try:
            client.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    if not client.recv(65536):
                        return  # the client gave up (its timeout) and closed
                except TimeoutError:
                    continue
        except OSError:
            return
        finally:
            with self._lock:
                self.hung -= 1

    @staticmethod
    def _pipe(client: socket.socket, upstream: socket.socket) -> None:
        def c2s() -> None:
            with contextlib.suppress(OSError):
                while chunk := client.recv(1 << 16):
                    upstream.sendall(chunk)

        t = threading.Thread(target=c2s, daemon=True)
        t.start()
        try:
            while chunk := upstream.recv(1 << 16):
                client.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.close()
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                client.close()
            t.join(timeout=2)
