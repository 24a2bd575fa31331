"""The edge's WebSocket protocol for uvicorn: uvicorn's own (websockets sans-I/O), except that
paths under `NO_DEFLATE_PREFIXES` decline permessage-deflate.

Why: a browser offers permessage-deflate and uvicorn accepts it on every connection, so each
overlay frame was compressed once per socket, with that socket's own deflate context (zlib state
of tens of KB per connection, and zlib's CPU per frame and watcher). Overlay frames are small
JSON: the same bytes for every watcher are worth more than the bytes deflate would save.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

# Paths whose connections do not negotiate permessage-deflate (the overlay protocol).
NO_DEFLATE_PREFIXES = ("/ws/draft/",)


class EdgeWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, without permessage-deflate on
    NO_DEFLATE_PREFIXES."""

    def handle_connect(self, event: Request) -> None:
        if event.path.startswith(NO_DEFLATE_PREFIXES):
            self.conn.available_extensions = []
        super().handle_connect(event)
