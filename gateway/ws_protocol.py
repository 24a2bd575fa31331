"""The edge's WebSocket protocol for uvicorn: uvicorn's own (websockets sans-I/O), plus what a
fan-out of one event to thousands of sockets needs.

Why: through ASGI, every frame to every socket is built again (`send_text` -> ASGI message ->
uvicorn -> websockets: encode, frame, compress per socket with its own deflate context) and
needs a task woken to send it. bench.fanout put that at ~100 us of the edge's CPU per watcher
and event, so one draft event took the edge about a second to reach 10,000 overlays. Here:

- `ws_text_frame` frames a text message once (a server frame is not masked, so the same bytes
  are valid on every connection);
- each connection carries a `FrameWriter` in its ASGI scope (`scope["extensions"]
  [FRAME_WRITER]`) that writes such bytes straight to the socket when the connection is open
  and its buffer below the high-water mark, and says False otherwise (the caller then goes the
  ordinary, awaiting way);
- paths under `NO_DEFLATE_PREFIXES` decline permessage-deflate: a browser offers it and uvicorn
  accepted it on every connection, so each overlay frame was compressed once per socket with
  that socket's own zlib context (tens of KB per connection, and zlib's CPU per frame and
  watcher) for small JSON. (A frame from a FrameWriter would be valid on a compressing
  connection too: RFC 7692 lets a message go uncompressed.)
"""

from __future__ import annotations

import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

# The ASGI scope extension under which a connection's FrameWriter is found.
FRAME_WRITER = "counterpick.frame_writer"
# Paths whose connections do not negotiate permessage-deflate (the overlay protocol).
NO_DEFLATE_PREFIXES = ("/ws/draft/",)


def ws_text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked, uncompressed WebSocket text frame (RFC 6455 5.2) carrying
    `payload` (UTF-8): what a server may send on any open connection."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x81, length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x81, 126, length)
    else:
        head = struct.pack("!BBQ", 0x81, 127, length)
    return head + payload


class FrameWriter:
    """Writes pre-framed bytes to one connection's socket, bypassing ASGI."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: EdgeWebSocketProtocol) -> None:
        self._protocol = protocol

    def write(self, frame: bytes) -> bool:
        """Write `frame` now if the connection is open and not backed up; False (nothing
        written) otherwise: closing or closed, or the socket's buffer over its high-water mark
        (send through ASGI then, which waits for it to drain)."""
        protocol = self._protocol
        if (
            protocol.close_sent
            or protocol.disconnected
            or protocol.conn.state is not State.OPEN
            or not protocol.writable.is_set()
        ):
            return False
        transport = protocol.transport
        if transport.is_closing():
            return False
        transport.write(frame)
        return True


class EdgeWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with a FrameWriter in every connection's scope and
    no permessage-deflate on NO_DEFLATE_PREFIXES (see the module docstring)."""

    def handle_connect(self, event: Request) -> None:
        if event.path.startswith(NO_DEFLATE_PREFIXES):
            self.conn.available_extensions = []
        super().handle_connect(event)
        scope: dict[str, Any] | None = getattr(self, "scope", None)
        if scope is not None:
            # The ASGI task is created but has not run yet: it sees the extension.
            scope["extensions"][FRAME_WRITER] = FrameWriter(self)
