"""A listener for systemd's notify protocol: what the service manager's socket receives."""

from __future__ import annotations

import socket
import struct
import time

_UCRED = struct.Struct("3i")  # pid, uid, gid


class NotifySocket:
    """A unix datagram socket that records each message with the sender's pid."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)

    def receive(self, timeout: float) -> tuple[str, int, float] | None:
        """(message, sender pid, arrival time), or None when nothing came in time."""
        self.sock.settimeout(timeout)
        try:
            data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
        except TimeoutError:
            return None
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _UCRED.unpack(payload[: _UCRED.size])[0]
        return data.decode(), pid, time.monotonic()

    def until(self, prefix: str, timeout: float) -> list[tuple[str, int, float]]:
        """Messages up to and including the first one starting with `prefix`."""
        got: list[tuple[str, int, float]] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            msg = self.receive(left) if left > 0 else None
            if msg is None:
                raise AssertionError(f"no {prefix} within {timeout} s; got {got}")
            got.append(msg)
            if msg[0].startswith(prefix):
                return got

    def close(self) -> None:
        self.sock.close()
