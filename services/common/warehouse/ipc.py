"""Arrow IPC streams cut into messages and put back together, one record batch at a time.

ReadWarehouse sends a result as consecutive byte chunks of one Arrow IPC stream. Encoding as
batches come and decoding as chunks arrive keeps about one batch and one chunk in memory on each
side beyond the decoded result, instead of the whole result several times over (table, encoded
stream, its copy, the chunks).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pyarrow as pa

# Well under gRPC's 4 MiB message limit, large enough that per-message overhead is negligible.
CHUNK_BYTES = 1 << 20


class _Spool(io.RawIOBase):
    """A write-only file the IPC writer fills and the chunker drains."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.data += data
        return len(data)

    def take(self, at_least: int) -> Iterator[bytes]:
        """Whole chunks of `at_least` bytes while there are that many (every byte if 0)."""
        size = at_least or len(self.data)
        while self.data and len(self.data) >= size:
            yield bytes(self.data[:size])
            del self.data[:size]


def ipc_chunks(reader: pa.RecordBatchReader, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The batches of `reader` as one Arrow IPC stream, in chunks of `chunk_bytes` (the last one
    shorter), produced as the batches are read."""
    spool = _Spool()
    with pa.ipc.new_stream(spool, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            yield from spool.take(chunk_bytes)
    yield from spool.take(0)


class _ChunkSource(io.RawIOBase):
    """A read-only file over the chunks of one stream, pulling the next chunk only when read."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._current:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._current = memoryview(chunk)
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size


def read_chunks(chunks: Iterator[bytes]) -> pa.Table:
    """The table of an Arrow IPC stream arriving as `chunks`, decoded batch by batch as they
    arrive (an error raised by `chunks` propagates as it is)."""
    with pa.ipc.open_stream(io.BufferedReader(_ChunkSource(chunks), CHUNK_BYTES)) as reader:
        return reader.read_all()
