"""Reading an upstream's Server-Sent Events: cut the bytes into events, take an event's data.

Shared by both lean decoders (lean_responses for the Responses API, lean_chat for Chat
Completions). The cutting is linear in the bytes however the network splits them: only the new
read is searched for the blank line that ends an event, and an event that spans many reads is
joined once. (Searching the whole buffer on every read was quadratic: a 5 MB answer's final
Responses event, which repeats the whole text, held the worker for seconds.)
"""

from __future__ import annotations

MAX_EVENT_BYTES = 8 * 1024 * 1024  # one SSE event, by default; more is refused, not buffered


class StreamDecodeError(ValueError):
    """The upstream sent an event that is not JSON, or one too large to buffer."""


class EventSplitter:
    """Cuts an SSE byte stream into events: the bytes between blank lines, line ends made LF."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._pending: list[bytes] = []  # the start of an event that is not complete yet
        self._pending_size = 0
        self._carry_cr = False

    def feed(self, data: bytes) -> list[bytes]:
        """The events that `data` completes, in order (often none)."""
        if self._carry_cr:
            data = b"\r" + data
            self._carry_cr = False
        if b"\r" in data:  # CRLF (or CR) line ends; a CRLF may straddle two reads
            if data.endswith(b"\r"):
                data, self._carry_cr = data[:-1], True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not data:
            return []
        pending = self._pending
        if pending and pending[-1].endswith(b"\n") and data.startswith(b"\n"):
            pending[-1] = pending[-1][:-1]  # the blank line straddles two reads
            data = b"\n" + data
        if b"\n\n" not in data:
            pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > self.max_event_bytes:
                raise StreamDecodeError("the model stream sent an event too large to buffer")
            return []
        first, *complete, rest = data.split(b"\n\n")
        if pending:
            first = b"".join(pending) + first
        self._pending = [rest] if rest else []
        self._pending_size = len(rest)
        return [first, *complete]

    def tail(self) -> bytes:
        """What is left when the stream ends (an event with no blank line after it), stripped."""
        return b"".join(self._pending).strip()


def data_of(raw: bytes) -> bytes | None:
    """The data of one SSE event (its lines, without the blank line), or None if it has none."""
    if raw.startswith(b"data: ") and b"\n" not in raw:
        return raw[6:]
    lines = [
        line[6:] if line.startswith(b"data: ") else line[5:]
        for line in raw.split(b"\n")
        if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None
