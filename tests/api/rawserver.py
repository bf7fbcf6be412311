"""A one-shot HTTP/1.1 server on loopback that records exactly what bytes of a body arrived.

Used to see what really goes over the wire when an upload is streamed or aborted.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field


def http_answer(
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
    content_length: int | None = None,
) -> bytes:
    """One HTTP/1.1 answer; `content_length` may differ from the body to frame it wrongly."""
    length = len(body) if content_length is None else content_length
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
        f"content-length: {length}\r\nrequest-id: req_raw\r\n{extra}\r\n"
    ).encode() + body


@dataclass
class Upload:
    """What the server saw of one request."""

    head: bytes = b""
    content_length: int = -1
    body: bytearray = field(default_factory=bytearray)
    chunk_sizes: list[int] = field(default_factory=list)
    # True when the client closed the connection before sending content_length bytes.
    cut_short: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def request_line(self) -> str:
        """`METHOD target HTTP/1.1`, as sent."""
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")

    def header(self, name: str) -> str | None:
        """A request header's value as sent (the first, if repeated), or None."""
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


class RawServer:
    """Accepts connections one at a time; `on_body(upload)` runs after each received read.

    `answer` is sent to every request; a sequence gives the n-th request its n-th answer (the
    last one from then on). With `close_after`, the connection is closed after each answer, so
    an answer may end early (short of its content-length) or be framed by the close alone.
    """

    def __init__(
        self,
        answer: bytes | Sequence[bytes],
        on_body: Callable[[Upload], None] | None = None,
        *,
        close_after: bool = False,
    ) -> None:
        self.answers = [answer] if isinstance(answer, bytes) else list(answer)
        self.on_body = on_body
        self.close_after = close_after
        self.uploads: list[Upload] = []
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        # A short accept timeout lets close() stop the thread promptly.
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stop = False
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def upload(self, index: int, timeout: float = 5.0) -> Upload:
        """The index-th request, once the server has finished receiving it."""
        deadline = threading.Event()
        for _ in range(int(timeout / 0.01)):
            if len(self.uploads) > index and self.uploads[index].done.is_set():
                return self.uploads[index]
            deadline.wait(0.01)
        raise AssertionError(f"request {index} never finished arriving")

    def close(self) -> None:
        self._stop = True
        self._sock.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(10)
                self._handle_connection(conn)

    def _handle_connection(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            upload = Upload(head=head)
            self.uploads.append(upload)
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    upload.content_length = int(value)
            if buffer:
                upload.body += buffer
                upload.chunk_sizes.append(len(buffer))
                buffer = b""
            while len(upload.body) < upload.content_length:
                if self.on_body is not None:
                    self.on_body(upload)
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    upload.cut_short = True
                    upload.done.set()
                    return
                upload.body += data
                upload.chunk_sizes.append(len(data))
            extra = bytes(upload.body[upload.content_length :])
            del upload.body[upload.content_length :]
            buffer = extra
            upload.done.set()
            try:
                conn.sendall(self.answers[min(len(self.uploads), len(self.answers)) - 1])
            except OSError:
                return  # the client hung up first
            if self.close_after:
                return
